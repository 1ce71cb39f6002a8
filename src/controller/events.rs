//! Events, published as client-go's recorder publishes them: off the
//! reconcile's path. A reconcile hands its event to a queue and goes on;
//! a task of its own creates the events, a few at a time. Nothing a
//! decision depends on is in an event, so one that cannot be published (the
//! queue full, the API server refusing) is logged and dropped, never retried
//! at the cost of a reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, Recorder, Reporter},
};
use tokio::sync::mpsc;

use super::error::is_namespace_terminating;

/// Events waiting to be published; more are dropped (as client-go drops
/// them beyond its 1 000).
const QUEUED: usize = 1000;
/// Events being created at once.
const AT_ONCE: usize = 16;

/// Where reconciles hand their events.
pub struct Events {
    queue: mpsc::Sender<(Event, ObjectReference)>,
}

impl Events {
    /// Starts the task that publishes as `reporter`; it ends once every
    /// handle to the queue is gone and the queue is drained.
    pub fn start(client: Client, reporter: Reporter) -> Self {
        let (queue, mut received) = mpsc::channel::<(Event, ObjectReference)>(QUEUED);
        tokio::spawn(async move {
            use futures::StreamExt;
            futures::stream::poll_fn(move |cx| received.poll_recv(cx))
                .for_each_concurrent(AT_ONCE, |(event, reference)| {
                    let (client, reporter) = (client.clone(), reporter.clone());
                    async move { publish_now(client, reporter, event, reference).await }
                })
                .await;
        });
        Self { queue }
    }

    /// Queues `event` about `reference`.
    pub fn publish(&self, event: Event, reference: ObjectReference) {
        if let Err(error) = self.queue.try_send((event, reference)) {
            let (event, _) = error.into_inner();
            tracing::warn!(reason = %event.reason, "too many events waiting to be published; this one is dropped");
        }
    }
}

async fn publish_now(client: Client, reporter: Reporter, event: Event, reference: ObjectReference) {
    // A recorder per event: kube's keeps every event it published for six
    // minutes to count repeats, and the operator's notes (token ids, times)
    // never repeat, so its cache would only hold one event per token for
    // nothing (3 KiB of the 13.6 KiB a new token cost, by `make bench`).
    let recorder = Recorder::new(client, reporter);
    match recorder.publish(&event, &reference).await {
        Ok(()) => {}
        // Events cannot be created in a namespace being deleted, and nobody
        // would read them there.
        Err(error) if is_namespace_terminating(&error) => {
            tracing::debug!(reason = %event.reason, "namespace is being deleted; event not published");
        }
        Err(error) => {
            tracing::warn!(error = %super::readable(&error), reason = %event.reason, "could not publish an event")
        }
    }
}
