//! One readiness wait that any number of reconciles can share.
//!
//! kube's `Store::wait_until_ready` keeps a single oneshot receiver behind a
//! mutex, and a oneshot receiver remembers only the waker of its latest poll.
//! When many reconciles wait at once, the store becoming ready wakes just one
//! of them; the others never run again and hold their concurrency slots
//! until the controller has none left and stops. `Shared` keeps every
//! waiter's waker, so waiting through it wakes them all.

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use kube::runtime::reflector::{Lookup, Store};

/// Completes once every store it was built from has been filled by its first
/// list; `false` if a store's writer was dropped first.
#[derive(Clone)]
pub struct ReadyGate(Shared<BoxFuture<'static, bool>>);

impl ReadyGate {
    /// A gate over the first-list readiness of `stores`.
    pub fn new(stores: Vec<BoxFuture<'static, bool>>) -> Self {
        Self(
            async move {
                for store in stores {
                    if !store.await {
                        return false;
                    }
                }
                true
            }
            .boxed()
            .shared(),
        )
    }

    /// Waits for the gate; `false` means the watches stopped.
    pub async fn wait(&self) -> bool {
        self.0.clone().await
    }
}

/// The readiness of one store, as a gate input.
pub fn filled<K>(store: &Store<K>) -> BoxFuture<'static, bool>
where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let store = store.clone();
    async move { store.wait_until_ready().await.is_ok() }.boxed()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::{reflector, watcher};

    use super::*;

    const WAITERS: usize = 64;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wakes_every_waiter_when_the_stores_fill() {
        let (first, mut first_writer) = reflector::store::<ConfigMap>();
        let (second, mut second_writer) = reflector::store::<ConfigMap>();
        let gate = ReadyGate::new(vec![filled(&first), filled(&second)]);
        let waiters: Vec<_> = (0..WAITERS)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move { gate.wait().await })
            })
            .collect();
        // Every waiter is parked before the stores fill.
        tokio::time::sleep(Duration::from_millis(50)).await;
        first_writer.apply_watcher_event(&watcher::Event::InitDone);
        tokio::time::sleep(Duration::from_millis(10)).await;
        second_writer.apply_watcher_event(&watcher::Event::InitDone);

        let all = futures::future::join_all(waiters);
        let results = tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .expect("every waiter wakes");
        assert!(results.into_iter().all(|r| r.expect("waiter ran")));
    }

    #[tokio::test]
    async fn reports_a_writer_dropped_before_the_first_list() {
        let (store, writer) = reflector::store::<ConfigMap>();
        let gate = ReadyGate::new(vec![filled(&store)]);
        drop(writer);
        assert!(!gate.wait().await);
    }
}
