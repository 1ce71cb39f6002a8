//! Feeds a controller the objects it must look at when it starts, a window
//! at a time.
//!
//! A controller reconciles every object of its kind when it starts. Given
//! all at once, kube's scheduler queues every one: two copies of each
//! reference (in a map and a delay queue, about 1 KiB a token with its
//! strings), and neither table gives back its capacity. A restart with
//! 100 000 tokens went 130 MiB above the running operator while they were
//! queued and kept a third of that for the process's life. Fed at most
//! [`WINDOW`] ahead of the reconciles that ended, the queue stays small,
//! and reconciles do not wait: the window is many times the concurrency.
//! Changes are not held back behind the rest of the startup's objects.

use std::{sync::Arc, time::Duration};

use futures::{Stream, stream};
use tokio::sync::watch;

/// Objects given to the controller and not yet reconciled, at most.
pub const WINDOW: u64 = 1024;
/// How long to wait for a reconcile to end before giving the next object
/// anyway: an object given twice (a change and the start's copy) ends in
/// one reconcile, so the count of ended ones may lag what was given.
const STALLED_AFTER: Duration = Duration::from_secs(1);

/// The count of a controller's reconciles that ended, which the feed
/// follows.
#[derive(Clone)]
pub struct Pace {
    ended: Arc<watch::Sender<u64>>,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            ended: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Pace {
    /// One reconcile ended (whatever its outcome).
    pub fn ended(&self) {
        self.ended.send_modify(|ended| *ended += 1);
    }

    /// `changes` as they come and, beside them, `at_start` no more than
    /// [`WINDOW`] ahead of the reconciles that ended.
    pub fn feed<K: Send + Sync + 'static>(
        &self,
        at_start: Vec<Arc<K>>,
        changes: impl Stream<Item = Arc<K>> + Send + 'static,
    ) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let ended = self.ended.subscribe();
        let given_from_start = *ended.borrow();
        let at_start = stream::unfold(
            (at_start.into_iter(), ended, given_from_start),
            |(mut objects, mut ended, mut given)| async move {
                let object = objects.next()?;
                while !may_give(given, *ended.borrow_and_update()) {
                    // Ended (the pace is dropped with the controller) or
                    // stalled: either way, go on.
                    if !matches!(
                        tokio::time::timeout(STALLED_AFTER, ended.changed()).await,
                        Ok(Ok(()))
                    ) {
                        break;
                    }
                }
                given += 1;
                Some((object, (objects, ended, given)))
            },
        );
        stream::select_with_strategy(changes, at_start, |_: &mut ()| stream::PollNext::Left)
    }
}

/// Whether another object may be given, `given` having been given in all
/// and `ended` reconciles having ended.
fn may_give(given: u64, ended: u64) -> bool {
    given.saturating_sub(ended) < WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, StreamExt};

    #[test]
    fn gives_while_fewer_than_a_window_wait() {
        for (given, ended, may) in [
            (0, 0, true),
            (WINDOW - 1, 0, true),
            (WINDOW, 0, false),
            (WINDOW, 1, true),
            (2 * WINDOW, WINDOW, false),
            (2 * WINDOW, WINDOW + 1, true),
            // More ended than given (reconciles of changes): no limit.
            (5, 100, true),
        ] {
            assert_eq!(may_give(given, ended), may, "given {given}, ended {ended}");
        }
    }

    fn ready<T>(stream: &mut (impl Stream<Item = T> + Unpin)) -> Vec<T> {
        let mut seen = Vec::new();
        while let Some(Some(item)) = stream.next().now_or_never() {
            seen.push(item);
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn the_start_goes_a_window_ahead_of_the_reconciles_and_changes_do_not_wait() {
        let pace = Pace::default();
        let (changes, changed) = futures::channel::mpsc::unbounded::<Arc<u64>>();
        let at_start = (0..3 * WINDOW).map(Arc::new).collect();
        let mut fed = Box::pin(pace.feed(at_start, changed));

        assert_eq!(ready(&mut fed).len() as u64, WINDOW);
        changes.unbounded_send(Arc::new(u64::MAX)).unwrap();
        assert_eq!(ready(&mut fed), [Arc::new(u64::MAX)]);

        for _ in 0..10 {
            pace.ended();
        }
        assert_eq!(ready(&mut fed).len(), 10);

        // Nothing ends for a while: the next one comes anyway.
        tokio::time::advance(STALLED_AFTER).await;
        assert_eq!(ready(&mut fed).len(), 1);

        for _ in 0..3 * WINDOW {
            pace.ended();
        }
        assert_eq!(ready(&mut fed).len() as u64, 3 * WINDOW - WINDOW - 11);
        // The changes go on after the start's objects are all given.
        changes.unbounded_send(Arc::new(7)).unwrap();
        assert_eq!(ready(&mut fed), [Arc::new(7)]);
    }
}
