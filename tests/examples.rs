//! Every manifest in `examples/` (and `examples/without-chart/`, the
//! ClusterTokenIssuer the chart otherwise installs) is accepted by the API
//! server as it is, and the operator makes every resource in them Ready.
//! tests/helm_lifecycle.rs applies `examples/` against the chart's defaults.

mod support;

use support::{TestNamespace, control_plane};

// One test, not two: both create the cluster-scoped ClusterTokenIssuer
// `default`, and a dry run racing a real create fails with AlreadyExists.
#[tokio::test]
async fn examples_pass_server_side_validation_then_become_ready() {
    support::operator::shared_operator();
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "examples").await;
    let dir = support::repo_root().join("examples");
    let without_chart = dir.join("without-chart");
    let output = control_plane().kubectl(&[
        "apply",
        "--dry-run=server",
        "-n",
        &ns.name,
        "-f",
        dir.to_str().unwrap(),
        "-f",
        without_chart.to_str().unwrap(),
    ]);
    for kind in [
        "clustertokenissuer",
        "tokenissuer",
        "accesstoken",
        "appregistration",
    ] {
        assert!(output.contains(kind), "{kind} missing from:\n{output}");
    }

    control_plane().kubectl(&[
        "apply",
        "-n",
        &ns.name,
        "-f",
        without_chart.to_str().unwrap(),
        "-f",
        dir.to_str().unwrap(),
    ]);
    let waited = control_plane().kubectl_output(&[
        "wait",
        "-n",
        &ns.name,
        "--for=condition=Ready",
        "accesstokens,appregistrations,tokenissuers",
        "--all",
        "--timeout=60s",
    ]);
    assert!(
        waited.status.success(),
        "{}{}",
        String::from_utf8_lossy(&waited.stdout),
        String::from_utf8_lossy(&waited.stderr)
    );
}
