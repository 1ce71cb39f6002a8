//! Leader election on a Lease in the operator's namespace: only the leader
//! runs the reconcilers; every replica serves the token service. A leader
//! that loses its lease stops reconciling and exits, so it starts over as a
//! follower instead of racing the new leader.

use std::{future::Future, sync::Arc, time::Duration};

use futures::FutureExt;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{info, warn};

use crate::{controller, telemetry::Metrics};

/// The Lease every replica competes for.
pub const LEASE_NAME: &str = "tokensmith-leader";
/// A leader that stops renewing is replaced this long after its last renewal.
const LEASE_SECONDS: u64 = 15;
/// The leader renews this long before its lease ends.
const RENEW_BEFORE_SECONDS: u64 = 5;

/// How this instance takes part in leader election.
#[derive(Clone, Debug)]
pub struct Election {
    pub enabled: bool,
    pub lease_name: String,
    /// Names this instance as holder (the pod name in a cluster).
    pub identity: String,
}

/// Runs the reconcilers while this instance holds the lease (or always, when
/// election is disabled), until `shutdown` completes.
pub async fn run_controllers_when_leading(
    client: Client,
    config: controller::Config,
    metrics: Arc<Metrics>,
    watches: crate::cluster::Watches,
    election: Election,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.boxed().shared();
    if !election.enabled {
        metrics.set_leader(true);
        return controller::run(client, config, metrics, watches, shutdown).await;
    }
    let identity = election.identity;
    let manager = LeaseManagerBuilder::new(client.clone(), election.lease_name.clone())
        .with_namespace(config.namespace.clone())
        .with_identity(identity.clone())
        .with_duration(LEASE_SECONDS)
        .with_grace(RENEW_BEFORE_SECONDS)
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    info!(%identity, lease = %election.lease_name, "waiting to lead");
    while !*leading.borrow_and_update() {
        tokio::select! {
            changed = leading.changed() => changed.map_err(|_| anyhow::anyhow!("leader election stopped"))?,
            _ = shutdown.clone() => return Ok(()),
        }
    }
    info!(%identity, "leading: starting the reconcilers");
    metrics.set_leader(true);
    let mut watching = leading.clone();
    let lost = async move {
        while watching.changed().await.is_ok() {
            if !*watching.borrow_and_update() {
                break;
            }
        }
    };
    let ended = shutdown.clone();
    let stop = async move {
        tokio::select! {
            _ = ended => {}
            _ = lost => {}
        }
    }
    .boxed()
    .shared();
    controller::run(client, config, metrics.clone(), watches, stop).await?;
    metrics.set_leader(false);
    if shutdown.clone().now_or_never().is_none() {
        anyhow::bail!("lost the leader lease; exiting to start over as a follower");
    }
    // Dropping the last receiver makes the lease task release the lease, so
    // a follower takes over at once instead of waiting for it to expire.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => info!("leader lease released"),
        Ok(Ok(Err(error))) => {
            warn!(%error, "could not release the leader lease; it expires on its own")
        }
        Ok(Err(_)) | Err(_) => {
            warn!("could not release the leader lease in time; it expires on its own")
        }
    }
    Ok(())
}
