//! The operator's own writes, recognised when the watches bring them back.
//!
//! Every write the operator makes comes back as a watch event, and a watch
//! event triggers a reconcile. The reconcile that made the write already
//! decided on the state it wrote, so the one its echo would trigger has
//! nothing to do but cost CPU and a slot of the controller's concurrency.
//! An echo is the object at exactly the resource version a write of ours
//! returned; anything else (someone else's write, ours seen late) still
//! triggers.
//!
//! The other half: a reconcile triggered by something else (a Secret's
//! deletion, an issuer's change) may start before the echo of the last
//! write has reached the caches, and would then decide on a state the
//! operator has already moved past: mint again, count an expiry twice, or
//! read the API server to tell a lag from a tamper. Until an object's last
//! write has come back, [`OwnWrites::awaiting`] says so and the reconcile
//! waits for it. "Come back" compares resource versions: the API server's
//! are increasing integers (etcd revisions) for one object; where one is
//! not an integer, only the exact version written counts, and nothing waits
//! longer than [`REMEMBERED`] either way.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt, future::ready};
use kube::{Resource, core::ObjectMeta};

/// How long a write is remembered: its echo arrives within milliseconds;
/// one later than this (a watch that listed again and skipped it) is
/// treated as a foreign change, and nothing waits for it any longer.
const REMEMBERED: Duration = Duration::from_secs(30);
/// How often the remembered writes are pruned of the old ones.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// A write whose echo has not come back yet.
#[derive(Clone, Copy)]
struct Unseen {
    uid: u64,
    echo: u64,
    version: Option<u64>,
    at: Instant,
}

impl Unseen {
    /// Whether an object of this name at `meta` is the write or later.
    fn is_reached_by(&self, meta: &ObjectMeta, own: &OwnWrites) -> bool {
        if own.uid_key(meta) != Some(self.uid) {
            return false;
        }
        match (self.version, version_number(meta)) {
            (Some(written), Some(seen)) => seen >= written,
            _ => own.echo_key(meta) == Some(self.echo),
        }
    }
}

fn version_number(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

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
    /// A hash of (kind, namespace, name) → the last write to that object
    /// whose echo has not been seen yet.
    unseen: HashMap<u64, Unseen>,
    pruned: Option<Instant>,
}

impl OwnWrites {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Remembers `object`, as returned by one of the operator's writes.
    pub fn wrote<K: Resource<DynamicType = ()>>(&self, object: &K) {
        let meta = object.meta();
        let (Some(key), Some(uid)) = (self.echo_key(meta), self.uid_key(meta)) else {
            return;
        };
        let Some(name) = self.name_key::<K>(meta.namespace.as_deref(), meta.name.as_deref()) else {
            return;
        };
        let now = Instant::now();
        let mut written = self.written.lock().expect("own writes lock");
        if written
            .pruned
            .is_none_or(|at| now.duration_since(at) >= PRUNE_EVERY)
        {
            written
                .at
                .retain(|_, at| now.duration_since(*at) < REMEMBERED);
            written
                .unseen
                .retain(|_, unseen| now.duration_since(unseen.at) < REMEMBERED);
            let kept = written.at.len();
            written.at.shrink_to(kept * 2);
            written.pruned = Some(now);
        }
        // A write that removed the last finalizer of an object being
        // deleted deleted it: the API server answers with the version it
        // deletes, which the cache already holds, and only the deletion's
        // event (a later version) shows the cache caught up.
        let deleted =
            meta.deletion_timestamp.is_some() && meta.finalizers.as_ref().is_none_or(Vec::is_empty);
        written.at.insert(key, now);
        written.unseen.insert(
            name,
            Unseen {
                uid,
                echo: key,
                version: version_number(meta).map(|v| if deleted { v + 1 } else { v }),
                at: now,
            },
        );
    }

    /// Whether `object` is exactly as one of the operator's recent writes
    /// left it. Seeing it, or any later version (a deletion included), also
    /// means the caches have caught up with the write.
    pub fn is_echo<K: Resource<DynamicType = ()>>(&self, object: &K) -> bool {
        let meta = object.meta();
        let Some(key) = self.echo_key(meta) else {
            return false;
        };
        let mut written = self.written.lock().expect("own writes lock");
        if let Some(name) = self.name_key::<K>(meta.namespace.as_deref(), meta.name.as_deref())
            && written
                .unseen
                .get(&name)
                .is_some_and(|unseen| unseen.is_reached_by(meta, self))
        {
            written.unseen.remove(&name);
        }
        written
            .at
            .get(&key)
            .is_some_and(|at| at.elapsed() < REMEMBERED)
    }

    /// Whether the object `namespace/name` of kind `K`, as the cache holds
    /// it (`cached`, `None` when absent), lags behind a recent write of the
    /// operator's own: the write's echo has not come back yet.
    pub fn awaiting<K: Resource<DynamicType = ()>>(
        &self,
        namespace: Option<&str>,
        name: &str,
        cached: Option<&ObjectMeta>,
    ) -> bool {
        let Some(key) = self.name_key::<K>(namespace, Some(name)) else {
            return false;
        };
        let written = self.written.lock().expect("own writes lock");
        let Some(unseen) = written.unseen.get(&key) else {
            return false;
        };
        if unseen.at.elapsed() >= REMEMBERED {
            return false;
        }
        match cached {
            // Not in the cache yet: our create has not come back (a
            // deletion since would have been seen, and ended the wait).
            None => true,
            // Another object of that name (deleted and made again) is not
            // waiting for our write to the old one.
            Some(meta) => {
                self.uid_key(meta) == Some(unseen.uid) && !unseen.is_reached_by(meta, self)
            }
        }
    }

    /// `objects` without the echoes of the operator's own writes.
    pub fn without_echoes<K: Resource<DynamicType = ()> + Send + Sync + 'static>(
        self: &Arc<Self>,
        objects: impl Stream<Item = Arc<K>> + Send + 'static,
    ) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let own = self.clone();
        objects.filter(move |object| ready(!own.is_echo(object.as_ref())))
    }

    fn echo_key(&self, meta: &ObjectMeta) -> Option<u64> {
        let uid = meta.uid.as_deref()?;
        let version = meta.resource_version.as_deref()?;
        Some(self.hasher.hash_one((uid, version)))
    }

    fn uid_key(&self, meta: &ObjectMeta) -> Option<u64> {
        Some(self.hasher.hash_one(meta.uid.as_deref()?))
    }

    fn name_key<K: Resource<DynamicType = ()>>(
        &self,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Option<u64> {
        Some(
            self.hasher
                .hash_one((K::kind(&()).as_ref(), namespace.unwrap_or_default(), name?)),
        )
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.written.lock().unwrap().at.len()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    use super::*;

    fn object(uid: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("cm".into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn only_the_exact_version_written_is_an_echo() {
        let own = OwnWrites::new();
        own.wrote(&object("a", "10"));
        let rows = [
            (object("a", "10"), true, "the version written"),
            (object("a", "11"), false, "a later write by someone else"),
            (object("a", "9"), false, "the version before the write"),
            (object("b", "10"), false, "another object"),
            (ConfigMap::default(), false, "no UID or version"),
        ];
        for (seen, echo, case) in rows {
            assert_eq!(own.is_echo(&seen), echo, "{case}");
        }
        // Every subscriber of a shared watch sees the echo as one.
        assert!(own.is_echo(&object("a", "10")));
    }

    #[test]
    fn a_cache_behind_a_write_awaits_its_echo() {
        let own = OwnWrites::new();
        let before = object("a", "9");
        let awaiting = |cached: Option<&ConfigMap>| {
            own.awaiting::<ConfigMap>(Some("ns"), "cm", cached.map(|c| &c.metadata))
        };
        assert!(!awaiting(Some(&before)), "nothing written yet");
        own.wrote(&object("a", "10"));
        assert!(
            awaiting(Some(&before)),
            "the cache still holds the version before"
        );
        assert!(awaiting(None), "a create not back yet");
        assert!(
            !awaiting(Some(&object("a", "10"))),
            "the cache holds the write"
        );
        assert!(
            !awaiting(Some(&object("b", "3"))),
            "another object of that name"
        );
        assert!(
            !own.awaiting::<Secret>(Some("ns"), "cm", Some(&before.metadata)),
            "another kind"
        );
        assert!(!awaiting(Some(&object("a", "11"))), "a later version");
        // Once its echo went by, nothing awaits it.
        assert!(own.is_echo(&object("a", "10")));
        assert!(!awaiting(Some(&before)));
    }

    #[test]
    fn a_copy_from_before_the_last_finalizer_s_removal_awaits_the_deletion() {
        let own = OwnWrites::new();
        let awaiting = |cached: &ConfigMap| {
            own.awaiting::<ConfigMap>(Some("ns"), "cm", Some(&cached.metadata))
        };
        let terminating = |version: &str, finalizers: Vec<String>| {
            let mut object = object("a", version);
            object.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
            object.metadata.finalizers = Some(finalizers);
            object
        };
        // Removing another finalizer leaves the object: its answer is a
        // new version, as for any write.
        own.wrote(&terminating("10", vec!["other".into()]));
        assert!(!awaiting(&terminating("10", vec!["other".into()])));
        // Removing the last one deletes it, at the version the cache holds.
        let cached = terminating("10", vec!["tokensmith.dev/revoke".into()]);
        own.wrote(&terminating("10", vec![]));
        assert!(awaiting(&cached), "the copy from before the removal");
        assert!(!own.is_echo(&terminating("11", vec![])), "the deletion");
        assert!(!awaiting(&cached), "the deletion was seen");
    }

    #[test]
    fn an_echo_faster_than_the_write_s_answer_is_not_awaited() {
        let own = OwnWrites::new();
        let awaiting = |cached: Option<&ConfigMap>| {
            own.awaiting::<ConfigMap>(Some("ns"), "cm", cached.map(|c| &c.metadata))
        };
        // The watch brought version 10 before the write that made it returned.
        assert!(!own.is_echo(&object("a", "10")));
        own.wrote(&object("a", "10"));
        assert!(!awaiting(Some(&object("a", "10"))), "the cache holds it");
        assert!(!awaiting(Some(&object("a", "12"))), "someone wrote after");
        // Its deletion (seen with its last version) ends any wait.
        own.wrote(&object("a", "13"));
        assert!(!own.is_echo(&object("a", "14")));
        assert!(!awaiting(None), "deleted since");
    }

    #[test]
    fn old_writes_are_forgotten() {
        let own = OwnWrites::new();
        own.wrote(&object("a", "1"));
        {
            let mut written = own.written.lock().unwrap();
            let long_ago = Instant::now() - REMEMBERED - Duration::from_secs(1);
            *written.at.values_mut().next().unwrap() = long_ago;
            written.unseen.values_mut().next().unwrap().at = long_ago;
            written.pruned = Some(long_ago);
        }
        assert!(!own.is_echo(&object("a", "1")), "too old to be an echo");
        assert!(
            !own.awaiting::<ConfigMap>(Some("ns"), "cm", None),
            "too old to wait for"
        );
        let mut other = object("b", "2");
        other.metadata.name = Some("other".into());
        own.wrote(&other);
        assert_eq!(own.remembered(), 1, "pruned when the next write came");
    }

    #[tokio::test]
    async fn echoes_are_left_out_of_a_stream() {
        let own = OwnWrites::new();
        own.wrote(&object("a", "10"));
        let seen: Vec<_> = own
            .without_echoes(futures::stream::iter([
                Arc::new(object("a", "10")),
                Arc::new(object("a", "11")),
            ]))
            .collect()
            .await;
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].metadata.resource_version.as_deref(), Some("11"));
    }
}
