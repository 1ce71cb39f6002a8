//! Tenants of a shared cluster: a namespace each, the Role the README's
//! security model gives a namespace editor, and a client that acts as that
//! user by impersonation, so the API server itself enforces what they may do.

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

use super::{TestNamespace, control_plane};

/// One tenant: a user with the tenant Role in one namespace, nothing else.
pub struct Tenant {
    pub user: String,
    pub ns: TestNamespace,
    /// Acts as `user` (impersonated); refused whatever the Role does not allow.
    pub client: Client,
}

/// The tenant Role of the security model: every verb on the tokensmith kinds
/// a namespace holds (never their `/status`), on Secrets, ConfigMaps and
/// ServiceAccounts (with `serviceaccounts/token`); nothing else.
pub fn tenant_role() -> Role {
    let rule = |groups: &[&str], resources: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|g| g.to_string()).collect()),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: vec!["*".into()],
        ..PolicyRule::default()
    };
    Role {
        metadata: ObjectMeta {
            name: Some("tenant".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule(
                &["tokensmith.dev"],
                &["accesstokens", "appregistrations", "tokenissuers"],
            ),
            rule(
                &[""],
                &[
                    "secrets",
                    "configmaps",
                    "serviceaccounts",
                    "serviceaccounts/token",
                ],
            ),
        ]),
    }
}

impl Tenant {
    /// A new namespace `PREFIX-<random>` whose editor is user `tenant-<namespace>`.
    pub async fn create(admin: &Client, prefix: &str) -> Self {
        let ns = TestNamespace::create(admin, prefix).await;
        let user = format!("tenant-{}", ns.name);
        let params = PostParams::default();
        Api::<Role>::namespaced(admin.clone(), &ns.name)
            .create(&params, &tenant_role())
            .await
            .expect("tenant Role");
        let binding = RoleBinding {
            metadata: ObjectMeta {
                name: Some("tenant".into()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: "tenant".into(),
            },
            subjects: Some(vec![Subject {
                kind: "User".into(),
                name: user.clone(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                ..Subject::default()
            }]),
        };
        Api::<RoleBinding>::namespaced(admin.clone(), &ns.name)
            .create(&params, &binding)
            .await
            .expect("tenant RoleBinding");
        let client = impersonating(&user).await;
        Self { user, ns, client }
    }

    /// `kubectl --as` this tenant; the output, successful or not.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--as", &self.user, "-n", &self.ns.name];
        all.extend_from_slice(args);
        control_plane().kubectl_output(&all)
    }
}

/// A client of the test control plane that acts as `user`.
pub async fn impersonating(user: &str) -> Client {
    let kubeconfig =
        Kubeconfig::read_from(&control_plane().kubeconfig).expect("readable kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).expect("client from kubeconfig")
}
