//! How fast a controller takes in the objects it must look at all at once:
//! every object of its kind when it starts, and again after a relist of its
//! kind or of a related kind, when changes may have been missed.
//!
//! Given all at once, kube's scheduler queues every one: two copies of each
//! reference (in a map and a delay queue, about 1 KiB a token with its
//! strings), and neither table gives back its capacity. A restart with
//! 30 000 tokens peaked 70 MiB above the running operator (116 MiB) and
//! kept 19 MiB of that for the process's life; the Secrets and the issuer,
//! handed over at start or relisted, queued each token again with a copy
//! of the related object's reference. Here such a pass goes through the cache a
//! [`WINDOW`] of objects ahead of their reconciles: the queue stays small,
//! and reconciles do not wait, the window being many times the concurrency.
//! Changes are not held back behind a pass.

use std::{
    collections::HashSet,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, StreamExt, future::ready, stream};
use kube::{Resource, runtime::reflector::Store};
use tokio::{sync::Notify, time::Instant};

use crate::cluster::watch::Notice;

/// Objects of a pass given to the controller and not yet reconciled, at
/// most.
pub const WINDOW: usize = 1024;
/// How long a full window may wait for a reconcile to end before the next
/// object is given anyway: a reconcile that hangs must not stop the pass.
const STALLED_AFTER: Duration = Duration::from_secs(1);

/// The passes of one controller of objects of kind `K`.
pub struct Pace<K: Resource<DynamicType = ()> + 'static> {
    shared: Arc<Shared<K>>,
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for Pace<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    passes: Mutex<Passes<K>>,
    /// Woken when a pass is asked for or a given object's reconcile ends.
    progress: Notify,
    hasher: RandomState,
}

/// The state of the passes: the one going on, whether another is due, and
/// which of the given objects are still waiting for their reconcile.
struct Passes<K> {
    current: std::vec::IntoIter<Arc<K>>,
    another: bool,
    /// Hashes of the namespace and name of each.
    waiting: HashSet<u64>,
    /// Since when passes have been going on without a break, and how many
    /// objects they gave (one given by two passes counts twice). A
    /// reconcile that never ends keeps them going: the passes move on past
    /// it, but are never told done.
    going: Option<(Instant, usize)>,
}

/// Passes that ended: every object they gave was reconciled and no other
/// pass is due. "Reconciled" counts by object: a reconcile of a change to
/// an object the pass gave, ending first, counts for it.
#[derive(Debug, PartialEq)]
pub struct PassesDone {
    /// Objects given, an object given by two passes (a relist during a
    /// pass) twice.
    pub given: usize,
    pub took: Duration,
}

impl<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static> Pace<K> {
    /// The passes over `store`'s objects, the first (the controller's start)
    /// already due.
    pub fn new(store: Store<K>) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                passes: Mutex::new(Passes {
                    current: Vec::new().into_iter(),
                    another: true,
                    waiting: HashSet::new(),
                    going: None,
                }),
                progress: Notify::new(),
                hasher: RandomState::new(),
            }),
        }
    }

    /// The objects `notices` tells of as changed; a relist asks for a pass.
    pub fn changes<O: Send + Sync + 'static>(
        &self,
        notices: impl Stream<Item = Notice<O>> + Send + 'static,
    ) -> impl Stream<Item = Arc<O>> + Send + 'static {
        let pace = self.clone();
        notices.filter_map(move |notice| {
            ready(match notice {
                Notice::Changed(object) => Some(object),
                Notice::Relisted => {
                    pace.ask_for_pass();
                    None
                }
            })
        })
    }

    /// The objects of every pass, each given while fewer than [`WINDOW`]
    /// given ones wait for their reconcile.
    pub fn passes(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        stream::unfold(self.clone(), |pace| async move {
            loop {
                // Asked for before looking, so a wake-up in between is kept.
                let shared = pace.shared.clone();
                let progress = shared.progress.notified();
                let (next, window_full) = pace.next(false);
                if let Some(object) = next {
                    return Some((object, pace));
                }
                if !window_full {
                    progress.await;
                } else if tokio::time::timeout(STALLED_AFTER, progress).await.is_err()
                    && let (Some(object), _) = pace.next(true)
                {
                    return Some((object, pace));
                }
            }
        })
    }

    /// The reconcile of the object `name` in `namespace` ended, whatever
    /// its outcome; when that was the last object of the passes going on,
    /// what they did (the operator logs it: how long a start took to look
    /// at every object).
    pub fn ended(&self, namespace: Option<&str>, name: &str) -> Option<PassesDone> {
        let key = self.key(namespace, name);
        let mut passes = self.lock();
        if !passes.waiting.remove(&key) {
            return None;
        }
        self.shared.progress.notify_one();
        let done =
            passes.waiting.is_empty() && passes.current.as_slice().is_empty() && !passes.another;
        if !done {
            return None;
        }
        let (since, given) = passes.going.take()?;
        Some(PassesDone {
            given,
            took: since.elapsed(),
        })
    }

    fn ask_for_pass(&self) {
        self.lock().another = true;
        self.shared.progress.notify_one();
    }

    /// The next object of a pass, if the window has room (or `anyway`), and
    /// whether the window is full.
    fn next(&self, anyway: bool) -> (Option<Arc<K>>, bool) {
        let mut passes = self.lock();
        if !anyway && passes.waiting.len() >= WINDOW {
            return (None, true);
        }
        let object = match passes.current.next() {
            Some(object) => object,
            None if std::mem::take(&mut passes.another) => {
                passes.current = self.shared.store.state().into_iter();
                passes.going.get_or_insert((Instant::now(), 0));
                match passes.current.next() {
                    Some(object) => object,
                    None => {
                        // Nothing to look at, and nothing given waits.
                        if passes.waiting.is_empty() {
                            passes.going = None;
                        }
                        return (None, false);
                    }
                }
            }
            None => return (None, false),
        };
        let meta = object.meta();
        let key = self.key(
            meta.namespace.as_deref(),
            meta.name.as_deref().unwrap_or_default(),
        );
        passes.waiting.insert(key);
        if let Some((_, given)) = &mut passes.going {
            *given += 1;
        }
        (Some(object), false)
    }

    fn key(&self, namespace: Option<&str>, name: &str) -> u64 {
        self.shared
            .hasher
            .hash_one((namespace.unwrap_or_default(), name))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Passes<K>> {
        self.shared
            .passes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, channel::mpsc::UnboundedSender};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{
        ResourceExt,
        api::ObjectMeta,
        runtime::{reflector::store::Writer, watcher},
    };
    use std::pin::Pin;

    fn config_map(i: usize) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("cm-{i:05}")),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn store_of(count: usize) -> (Writer<ConfigMap>, Store<ConfigMap>) {
        let mut writer = Writer::default();
        writer.apply_watcher_event(&watcher::Event::Init);
        for i in 0..count {
            writer.apply_watcher_event(&watcher::Event::InitApply(config_map(i)));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let store = writer.as_reader();
        (writer, store)
    }

    fn given(stream: &mut (impl Stream<Item = Arc<ConfigMap>> + Unpin)) -> Vec<String> {
        let mut seen = Vec::new();
        while let Some(Some(object)) = stream.next().now_or_never() {
            seen.push(object.name_any());
        }
        seen
    }

    type Given = Pin<Box<dyn Stream<Item = Arc<ConfigMap>> + Send>>;

    /// A pace over `count` objects, its passes, and the changes of a
    /// subscription fed by the sender.
    fn paced(
        count: usize,
    ) -> (
        Pace<ConfigMap>,
        Given,
        UnboundedSender<Notice<ConfigMap>>,
        Given,
    ) {
        let (_writer, store) = store_of(count);
        let pace = Pace::new(store);
        let passes = Box::pin(pace.passes());
        let (notices, told) = futures::channel::mpsc::unbounded::<Notice<ConfigMap>>();
        let changes = Box::pin(pace.changes(told));
        (pace, passes, notices, changes)
    }

    fn end(pace: &Pace<ConfigMap>, names: &[String]) {
        for name in names {
            pace.ended(Some("ns"), name);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_goes_a_window_ahead_of_the_reconciles_of_its_objects() {
        let (_writer, store) = store_of(3 * WINDOW);
        let pace = Pace::new(store);
        let mut passes = Box::pin(pace.passes());

        let first = given(&mut passes);
        assert_eq!(first.len(), WINDOW);
        let mut all = first.clone();

        // Reconciles of objects the pass did not give (changes) free nothing.
        end(&pace, &["elsewhere".to_string()]);
        assert!(given(&mut passes).is_empty());

        end(&pace, &first[..10]);
        let freed = given(&mut passes);
        assert_eq!(freed.len(), 10);
        all.extend(freed);

        // Nothing ends for a while: the next one comes anyway.
        tokio::time::advance(STALLED_AFTER).await;
        let stalled = given(&mut passes);
        assert_eq!(stalled.len(), 1);
        all.extend(stalled);

        end(&pace, &first);
        let rest = given(&mut passes);
        assert!(!rest.is_empty() && rest.len() <= WINDOW);
        all.extend(rest);

        loop {
            let before = all.len();
            end(&pace, &all);
            all.extend(given(&mut passes));
            if all.len() == before {
                break;
            }
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 3 * WINDOW, "every object given once");
    }

    #[tokio::test(start_paused = true)]
    async fn relists_ask_for_one_more_pass_and_changes_pass_at_once() {
        let (pace, mut passes, notices, mut changes) = paced(3);

        let start = given(&mut passes);
        assert_eq!(start.len(), 3);
        assert!(given(&mut passes).is_empty(), "no pass asked for since");

        // Two relists (of the kind and of a related one) before the next
        // pass starts make one pass.
        notices.unbounded_send(Notice::Relisted).unwrap();
        notices
            .unbounded_send(Notice::Changed(Arc::new(config_map(7))))
            .unwrap();
        notices.unbounded_send(Notice::Relisted).unwrap();
        assert_eq!(given(&mut changes), ["cm-00007"]);
        end(&pace, &start);
        assert_eq!(given(&mut passes).len(), 3);
        end(&pace, &start);
        assert!(given(&mut passes).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_the_passes_is_told_once_with_what_they_gave() {
        let (pace, mut passes, notices, mut changes) = paced(3);

        let start = given(&mut passes);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(pace.ended(Some("ns"), "elsewhere"), None, "not given");
        assert_eq!(pace.ended(Some("ns"), &start[0]), None);
        assert_eq!(pace.ended(Some("ns"), &start[1]), None);
        let done = pace.ended(Some("ns"), &start[2]);
        assert_eq!(
            done,
            Some(PassesDone {
                given: 3,
                took: Duration::from_secs(2)
            })
        );
        assert_eq!(pace.ended(Some("ns"), &start[2]), None, "told once");

        // A relist during a pass: told when the pass it asked for ends too.
        notices.unbounded_send(Notice::Relisted).unwrap();
        assert!(given(&mut changes).is_empty());
        let second = given(&mut passes);
        notices.unbounded_send(Notice::Relisted).unwrap();
        assert!(given(&mut changes).is_empty());
        end(&pace, &second);
        let third = given(&mut passes);
        assert_eq!(third.len(), 3);
        let last = third.last().unwrap();
        end(&pace, &third[..2]);
        assert_eq!(pace.ended(Some("ns"), last).map(|d| d.given), Some(6));
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_pass_is_not_counted_in_the_next() {
        let (mut writer, store) = store_of(0);
        let pace = Pace::new(store);
        let mut passes = Box::pin(pace.passes());
        assert!(given(&mut passes).is_empty());
        tokio::time::advance(Duration::from_secs(60)).await;
        writer.apply_watcher_event(&watcher::Event::Apply(config_map(1)));
        pace.ask_for_pass();
        let given_now = given(&mut passes);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            pace.ended(Some("ns"), &given_now[0]),
            Some(PassesDone {
                given: 1,
                took: Duration::from_secs(1)
            })
        );
    }
}
