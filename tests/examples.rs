//! Every manifest in `examples/` is accepted by the API server as it is.

mod support;

use support::{TestNamespace, control_plane};

#[tokio::test]
async fn examples_pass_server_side_validation() {
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "examples").await;
    let dir = support::repo_root().join("examples");
    let output = control_plane().kubectl(&[
        "apply",
        "--dry-run=server",
        "-n",
        &ns.name,
        "-f",
        dir.to_str().unwrap(),
    ]);
    for kind in [
        "clustertokenissuer",
        "tokenissuer",
        "accesstoken",
        "appregistration",
    ] {
        assert!(output.contains(kind), "{kind} missing from:\n{output}");
    }
}
