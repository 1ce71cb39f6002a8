//! The operator's own writes, recognised when the watches bring them back.
//!
//! Every write the operator makes comes back as a watch event, and a watch
//! event triggers a reconcile. The reconcile that made the write already
//! decided on the state it wrote, so the one its echo would trigger has
//! nothing to do but cost CPU, a slot of the controller's concurrency and,
//! when the echo of one write (the Secret) overtakes that of the next (the
//! status), a read of the API server to tell the lag from a tamper. An echo
//! is the object at exactly the resource version a write of ours returned;
//! anything else (someone else's write, ours seen late) still triggers.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt, future::ready};
use kube::{Resource, core::ObjectMeta};

/// How long a write is remembered: its echo arrives within milliseconds;
/// one later than this triggers a reconcile as a foreign change would.
const REMEMBERED: Duration = Duration::from_secs(30);
/// How often the remembered writes are pruned of the old ones.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// The resource versions the operator's writes returned, for a short while.
#[derive(Default)]
pub struct OwnWrites {
    hasher: RandomState,
    written: Mutex<Written>,
}

#[derive(Default)]
struct Written {
    /// A hash of (UID, resource version) → when it was written: 8 bytes a
    /// key, not two strings, since a burst of new tokens holds thousands.
    at: HashMap<u64, Instant>,
    pruned: Option<Instant>,
}

impl OwnWrites {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Remembers `meta`, as returned by one of the operator's writes.
    pub fn wrote(&self, meta: &ObjectMeta) {
        let Some(key) = self.key(meta) else { return };
        let now = Instant::now();
        let mut written = self.written.lock().expect("own writes lock");
        if written
            .pruned
            .is_none_or(|at| now.duration_since(at) >= PRUNE_EVERY)
        {
            written
                .at
                .retain(|_, at| now.duration_since(*at) < REMEMBERED);
            let kept = written.at.len();
            written.at.shrink_to(kept * 2);
            written.pruned = Some(now);
        }
        written.at.insert(key, now);
    }

    /// Whether `meta` is an object exactly as one of the operator's recent
    /// writes left it.
    pub fn is_echo(&self, meta: &ObjectMeta) -> bool {
        let Some(key) = self.key(meta) else {
            return false;
        };
        let written = self.written.lock().expect("own writes lock");
        written
            .at
            .get(&key)
            .is_some_and(|at| at.elapsed() < REMEMBERED)
    }

    /// `objects` without the echoes of the operator's own writes.
    pub fn without_echoes<K: Resource + Send + Sync + 'static>(
        self: &Arc<Self>,
        objects: impl Stream<Item = Arc<K>> + Send + 'static,
    ) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let own = self.clone();
        objects.filter(move |object| ready(!own.is_echo(object.meta())))
    }

    fn key(&self, meta: &ObjectMeta) -> Option<u64> {
        let uid = meta.uid.as_deref()?;
        let version = meta.resource_version.as_deref()?;
        Some(self.hasher.hash_one((uid, version)))
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.written.lock().unwrap().at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: &str, version: &str) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_the_exact_version_written_is_an_echo() {
        let own = OwnWrites::new();
        own.wrote(&meta("a", "10"));
        let rows = [
            (meta("a", "10"), true, "the version written"),
            (meta("a", "11"), false, "a later write by someone else"),
            (meta("a", "9"), false, "the version before the write"),
            (meta("b", "10"), false, "another object"),
            (ObjectMeta::default(), false, "no UID or version"),
        ];
        for (seen, echo, case) in rows {
            assert_eq!(own.is_echo(&seen), echo, "{case}");
        }
        // Every subscriber of a shared watch sees the echo as one.
        assert!(own.is_echo(&meta("a", "10")));
    }

    #[test]
    fn old_writes_are_forgotten() {
        let own = OwnWrites::new();
        own.wrote(&meta("a", "1"));
        {
            let mut written = own.written.lock().unwrap();
            let long_ago = Instant::now() - REMEMBERED - Duration::from_secs(1);
            *written.at.values_mut().next().unwrap() = long_ago;
            written.pruned = Some(long_ago);
        }
        assert!(!own.is_echo(&meta("a", "1")), "too old to be an echo");
        own.wrote(&meta("b", "2"));
        assert_eq!(own.remembered(), 1, "pruned when the next write came");
    }

    #[tokio::test]
    async fn echoes_are_left_out_of_a_stream() {
        let own = OwnWrites::new();
        let ours = k8s_openapi::api::core::v1::ConfigMap {
            metadata: meta("a", "10"),
            ..Default::default()
        };
        let theirs = k8s_openapi::api::core::v1::ConfigMap {
            metadata: meta("a", "11"),
            ..Default::default()
        };
        own.wrote(&ours.metadata);
        let seen: Vec<_> = own
            .without_echoes(futures::stream::iter([Arc::new(ours), Arc::new(theirs)]))
            .collect()
            .await;
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].metadata.resource_version.as_deref(), Some("11"));
    }
}
