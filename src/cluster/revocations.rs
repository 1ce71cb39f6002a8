//! The durable record of revoked token ids, kept in the cluster so that a
//! restarted operator and every replica of the token service know them.
//!
//! Entries live in ConfigMaps `tokensmith-revocations-<shard>` in the
//! operator's namespace, one data key per (issuer, token id) with its expiry
//! as value: a token id means nothing without its issuer, so no issuer's
//! tokens can be revoked by naming their ids under another issuer;
//! an entry is dropped once its token has expired anyway. Writes are JSON
//! merge patches that add keys, so concurrent writers never lose each other's
//! entries and no read-modify-write is needed.
//!
//! Revocations made at the same time share writes: while a shard's write is
//! under way, every revocation for that shard waits for the next one, which
//! carries them all (a group commit). Each caller still returns only once
//! its own entries are stored. Revoking many tokens at once (a namespace
//! deleted) so costs about one write per shard per round trip instead of one
//! per token, and the watchers of the record (every replica's token service)
//! decode each page that many times fewer.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{api::core::v1::ConfigMap, jiff::Timestamp};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::reflector::{ObjectRef, Store},
};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{
    labels::{MANAGED_BY, MANAGER, REVOCATIONS_LABEL},
    revocation_counts::parse_entry,
};

/// Why a revocation could not be recorded. Cloned for every revocation
/// that shared the failed write.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("Kubernetes API request failed: {0}")]
    Kube(Arc<kube::Error>),

    #[error(
        "the revocation record {configmap} is full ({entries} live entries); tokens cannot be revoked until entries expire or the operator is given more shards"
    )]
    Full { configmap: String, entries: usize },

    #[error("the revocation record's writer stopped before storing the entry")]
    WriterGone,
}

impl From<kube::Error> for RevocationError {
    fn from(error: kube::Error) -> Self {
        Self::Kube(Arc::new(error))
    }
}

type Result<T, E = RevocationError> = std::result::Result<T, E>;
/// Number of ConfigMaps the entries are spread over. Each holds about 15 000
/// live entries within the 1 MiB object limit.
pub const SHARDS: u64 = 16;

/// One revoked token: its issuer, its id and when it would have expired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedToken {
    /// The `iss` of the token.
    pub issuer_url: String,
    pub token_id: String,
    pub expires_at: Timestamp,
    /// The namespace of the object it belonged to: its entry counts against
    /// that namespace's quota.
    pub namespace: Option<String>,
}

impl RevokedToken {
    /// Its key in the record.
    pub fn key(&self) -> String {
        revocation_key(&self.issuer_url, &self.token_id)
    }

    /// Its value in the record: `<expiry>` or `<expiry> <namespace>`.
    fn value(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{} {namespace}", self.expires_at),
            None => self.expires_at.to_string(),
        }
    }
}

/// The record's key for token `token_id` of the issuer `issuer_url`:
/// `<issuer digest>.<token id>` (a ConfigMap key cannot hold a URL).
pub fn revocation_key(issuer_url: &str, token_id: &str) -> String {
    let issuer = crate::token::fingerprint(issuer_url);
    let digest = issuer.strip_prefix("sha256:").unwrap_or(&issuer);
    format!("{}.{token_id}", &digest[..16])
}

/// The ConfigMap holding the entry with `key`.
pub fn shard_name(key: &str) -> String {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("tokensmith-revocations-{:x}", hash % SHARDS)
}

/// Overflow pages a shard may spill into once its ConfigMap is full, so
/// that a revocation is not refused for want of room: 16 shards of 1 024
/// pages of [`PAGE_BYTES`] hold about 13 million unexpired entries.
pub const OVERFLOW_PAGES: usize = 1023;

/// The data a page takes new entries up to. Every write of a page makes the
/// API server decode, store and send out the whole page, so a page's size
/// is what each revocation costs: with pages filled to the 1 MiB a
/// ConfigMap may hold, revoking 100 000 tokens at once rewrote half-MiB
/// objects about 85 000 times, slowed to about 40 a second and took the
/// API server past 13 GiB. A page may end up one write larger.
pub const PAGE_BYTES: usize = 64 << 10;

/// The ConfigMaps of a shard, in the order they fill: the shard's own, then
/// `<shard>-1`, `<shard>-2`, ... Pages are only ever created in this order
/// and never deleted, so a reader may stop at the first one missing.
pub fn shard_pages(shard: &str) -> impl Iterator<Item = String> + '_ {
    std::iter::once(shard.to_string())
        .chain((1..=OVERFLOW_PAGES).map(move |n| format!("{shard}-{n}")))
}

/// Entries a shard's next write carries: at most this many, so that one
/// write never outgrows the room a page has left (80 bytes an entry: about
/// 80 KiB).
const MOST_PER_WRITE: usize = 1000;

/// One caller's entries for a shard, and whom to tell once they are stored.
type Revocation = (BTreeMap<String, String>, oneshot::Sender<Result<()>>);

/// Revocations waiting for their shard's next write.
type Waiting = VecDeque<Revocation>;

#[derive(Default)]
struct ShardQueue {
    waiting: Waiting,
    /// Whether a writer is working through this queue.
    writing: bool,
}

/// How long the store remembers an entry it wrote, to skip writing it again.
const REMEMBERED: Duration = Duration::from_secs(60);

/// Writes revocations into the cluster.
#[derive(Clone)]
pub struct RevocationStore {
    api: Api<ConfigMap>,
    namespace: String,
    /// The record as watched: which pages are full, without a read.
    pages: Store<ConfigMap>,
    queues: Arc<Mutex<HashMap<String, ShardQueue>>>,
    recent: Arc<Mutex<Recent>>,
}

/// The entries this process stored in the last [`REMEMBERED`]: a token
/// revoked again soon after (a retried reconcile whose earlier write went
/// through, the revocation endpoint asked twice) costs no write. A
/// reconcile on a copy from before a finalizer's removal no longer gets
/// here: `OwnWrites` makes it wait for the deletion. The record is never
/// edited but by the operator, so what it stored is still there.
#[derive(Default)]
struct Recent {
    stored: HashMap<String, Instant>,
    pruned: Option<Instant>,
}

impl Recent {
    fn holds(&self, key: &str) -> bool {
        self.stored
            .get(key)
            .is_some_and(|at| at.elapsed() < REMEMBERED)
    }

    fn add(&mut self, keys: impl Iterator<Item = String>) {
        let now = Instant::now();
        if self
            .pruned
            .is_none_or(|at| now.duration_since(at) >= REMEMBERED)
        {
            self.stored
                .retain(|_, at| now.duration_since(*at) < REMEMBERED);
            self.pruned = Some(now);
        }
        self.stored.extend(keys.map(|key| (key, now)));
    }
}

impl RevocationStore {
    pub fn new(client: Client, namespace: &str, pages: Store<ConfigMap>) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            pages,
            queues: Arc::default(),
            recent: Arc::default(),
        }
    }

    /// Records `tokens` as revoked; tokens already expired need no record.
    /// Returns once every entry is stored.
    pub async fn revoke(&self, tokens: &[RevokedToken], now: Timestamp) -> Result<()> {
        let by_shard = self.unstored_by_shard(tokens, now);
        let mut stored = Vec::with_capacity(by_shard.len());
        for (shard, entries) in by_shard {
            let (told, told_rx) = oneshot::channel();
            stored.push(told_rx);
            let start_writer = {
                let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
                let queue = queues.entry(shard.clone()).or_default();
                queue.waiting.push_back((entries, told));
                !std::mem::replace(&mut queue.writing, true)
            };
            if start_writer {
                // Its own task: a caller that gives up waiting (a cancelled
                // reconcile) must not stop the writes of the others.
                tokio::spawn(self.clone().write_queue(shard));
            }
        }
        for told in stored {
            told.await.unwrap_or(Err(RevocationError::WriterGone))?;
        }
        Ok(())
    }

    /// The entries of `tokens` still to be stored, by shard: none for a
    /// token already expired or stored a moment ago.
    fn unstored_by_shard(
        &self,
        tokens: &[RevokedToken],
        now: Timestamp,
    ) -> BTreeMap<String, BTreeMap<String, String>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_shard: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for token in tokens.iter().filter(|t| t.expires_at > now) {
            let key = token.key();
            if !recent.holds(&key) {
                by_shard
                    .entry(shard_name(&key))
                    .or_default()
                    .insert(key, token.value());
            }
        }
        by_shard
    }

    /// Writes `shard`'s queue until it is empty, as many waiting entries at
    /// a time as fit one write.
    async fn write_queue(self, shard: String) {
        loop {
            let batch = {
                let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
                let Some(queue) = queues.get_mut(&shard) else {
                    return;
                };
                let batch = take_batch(&mut queue.waiting, MOST_PER_WRITE);
                if batch.is_empty() {
                    queues.remove(&shard);
                    return;
                }
                batch
            };
            let mut entries = BTreeMap::new();
            let mut waiters = Vec::with_capacity(batch.len());
            for (mut some, told) in batch {
                entries.append(&mut some);
                waiters.push(told);
            }
            let result = self.add_to_shard(&shard, &entries, Timestamp::now()).await;
            if result.is_ok() {
                self.recent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .add(entries.into_keys());
            }
            for told in waiters {
                let _ = told.send(result.clone());
            }
        }
    }

    /// Adds `entries` to the first page of `shard` with room, pruning a full
    /// page of its expired entries before moving on to the next.
    async fn add_to_shard(
        &self,
        shard: &str,
        entries: &BTreeMap<String, String>,
        now: Timestamp,
    ) -> Result<()> {
        for page in shard_pages(shard) {
            // Full of unexpired entries as far as the cache knows: on to the
            // next page without a write. A page written since is at most a
            // write or two larger; its expired entries go at its next write.
            let cached = self
                .pages
                .get(&ObjectRef::new(&page).within(&self.namespace));
            if cached.is_some_and(|cached| page_is_full(&cached, now)) {
                continue;
            }
            let written = match self.add_entries(&page, entries).await {
                Ok(written) => written,
                Err(RevocationError::Full { .. }) => {
                    let full = self.api.get(&page).await?;
                    if !self.prune_expired(&page, &full, now).await? {
                        continue;
                    }
                    match self.add_entries(&page, entries).await {
                        Ok(written) => written,
                        Err(RevocationError::Full { .. }) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            self.prune_expired(&page, &written, now).await?;
            return Ok(());
        }
        Err(RevocationError::Full {
            configmap: format!("{shard}-{OVERFLOW_PAGES}"),
            entries: entries.len(),
        })
    }

    async fn add_entries(
        &self,
        shard: &str,
        entries: &BTreeMap<String, String>,
    ) -> Result<ConfigMap> {
        let params = PatchParams {
            field_manager: Some(MANAGER.to_string()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(json!({ "data": entries }));
        match self.api.patch(shard, &params, &patch).await {
            Ok(cm) => Ok(cm),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(shard.to_string()),
                        labels: Some(
                            [
                                (REVOCATIONS_LABEL.to_string(), "true".to_string()),
                                (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                            ]
                            .into(),
                        ),
                        ..ObjectMeta::default()
                    },
                    data: Some(entries.clone()),
                    ..ConfigMap::default()
                };
                let post = PostParams {
                    field_manager: Some(MANAGER.to_string()),
                    ..PostParams::default()
                };
                match self.api.create(&post, &cm).await {
                    Ok(cm) => Ok(cm),
                    // Another writer created it first: add to theirs.
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        Ok(self.api.patch(shard, &params, &patch).await?)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            // A ConfigMap over 1 MiB of data (422), or an object etcd refuses
            // to store (its request limit, answered 500 "request is too
            // large"): this page is full.
            Err(kube::Error::Api(status))
                if status.code == 413
                    || status.code == 422
                    || status.message.contains("request is too large") =>
            {
                let entries = self.api.get(shard).await?.data.map_or(0, |d| d.len());
                Err(RevocationError::Full {
                    configmap: shard.to_string(),
                    entries,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Drops the expired entries of `cm`; whether there were any.
    async fn prune_expired(&self, shard: &str, cm: &ConfigMap, now: Timestamp) -> Result<bool> {
        let expired: serde_json::Map<String, Value> = cm
            .data
            .iter()
            .flatten()
            .filter(|(_, value)| parse_entry(value).0.is_some_and(|exp| exp <= now))
            .map(|(id, _)| (id.clone(), Value::Null))
            .collect();
        if expired.is_empty() {
            return Ok(false);
        }
        let params = PatchParams {
            field_manager: Some(MANAGER.to_string()),
            ..PatchParams::default()
        };
        self.api
            .patch(shard, &params, &Patch::Merge(json!({ "data": expired })))
            .await?;
        Ok(true)
    }
}

/// Whether `page` holds [`PAGE_BYTES`] of unexpired entries or more.
fn page_is_full(page: &ConfigMap, now: Timestamp) -> bool {
    let entries = || page.data.iter().flatten();
    // Most writes go to a page with room: no expiry need be read for it.
    if entries()
        .map(|(key, value)| key.len() + value.len())
        .sum::<usize>()
        < PAGE_BYTES
    {
        return false;
    }
    let live: usize = entries()
        .filter(|(_, value)| parse_entry(value).0.is_none_or(|exp| exp > now))
        .map(|(key, value)| key.len() + value.len())
        .sum();
    live >= PAGE_BYTES
}

/// The first waiting revocations, whole, up to `most` entries (at least one
/// revocation, however many entries it has).
fn take_batch(waiting: &mut Waiting, most: usize) -> Vec<Revocation> {
    let mut batch = Vec::new();
    let mut entries = 0;
    while let Some((some, _)) = waiting.front() {
        if !batch.is_empty() && entries + some.len() > most {
            break;
        }
        entries += some.len();
        batch.extend(waiting.pop_front());
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::revocation_counts::RevocationCounts;

    #[test]
    fn a_page_is_full_with_its_share_of_unexpired_entries() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let page = |entries: usize, value: &str| ConfigMap {
            data: Some(
                (0..entries)
                    .map(|i| (format!("0123456789abcdef.token-{i:08}"), value.to_string()))
                    .collect(),
            ),
            ..ConfigMap::default()
        };
        let live = "2026-06-01T00:00:00Z namespace";
        let expired = "2025-06-01T00:00:00Z namespace";
        let unreadable = "not a time at all, kept anyway";
        // Every key and every value above has one length.
        let entry_bytes = "0123456789abcdef.token-00000000".len() + live.len();
        let fit = PAGE_BYTES / entry_bytes;
        assert!(fit * entry_bytes < PAGE_BYTES);
        for (entries, value, full) in [
            (0, live, false),
            (fit, live, false),
            (fit + 1, live, true),
            (fit * 4, expired, false),
            (fit + 1, unreadable, true),
        ] {
            assert_eq!(
                page_is_full(&page(entries, value), now),
                full,
                "{entries} entries of {value:?}"
            );
        }
    }

    #[test]
    fn keys_bind_the_token_id_to_its_issuer() {
        let key = revocation_key("https://tokens.example/a", "id-1");
        assert!(key.ends_with(".id-1"), "{key}");
        assert_eq!(key, revocation_key("https://tokens.example/a", "id-1"));
        assert_ne!(key, revocation_key("https://tokens.example/b", "id-1"));
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
            "a valid ConfigMap key: {key}"
        );
    }

    #[test]
    fn entries_carry_their_namespace_and_are_counted_by_it() {
        let at: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let token = |id: &str, namespace: Option<&str>| RevokedToken {
            issuer_url: "https://i".into(),
            token_id: id.into(),
            expires_at: at,
            namespace: namespace.map(String::from),
        };
        assert_eq!(
            parse_entry(&token("a", Some("team-a")).value()),
            (Some(at), Some("team-a"))
        );
        assert_eq!(parse_entry(&token("b", None).value()), (Some(at), None));
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("tokensmith-revocations-0".into()),
                ..ObjectMeta::default()
            },
            data: Some(
                [
                    token("a", Some("team-a")),
                    token("b", Some("team-a")),
                    token("c", Some("team-b")),
                    token("d", None),
                ]
                .iter()
                .map(|t| (t.key(), t.value()))
                .collect(),
            ),
            ..ConfigMap::default()
        };
        let counts = RevocationCounts::default();
        counts.apply(&kube::runtime::watcher::Event::Apply(cm.clone()));
        assert_eq!(
            (counts.in_namespace("team-a"), counts.in_namespace("team-b")),
            (2, 1)
        );
        counts.apply(&kube::runtime::watcher::Event::Delete(cm));
        assert_eq!(counts.in_namespace("team-a"), 0);
    }

    #[test]
    fn a_write_takes_whole_revocations_up_to_its_size() {
        let revocation = |n: usize| {
            let entries: BTreeMap<String, String> =
                (0..n).map(|i| (format!("k{i}"), String::new())).collect();
            (entries, oneshot::channel().0)
        };
        let sizes = |batch: &[(BTreeMap<String, String>, _)]| -> Vec<usize> {
            batch.iter().map(|(e, _)| e.len()).collect()
        };
        let mut waiting: Waiting = [1, 2, 3, 5, 1].map(revocation).into();
        assert_eq!(sizes(&take_batch(&mut waiting, 6)), [1, 2, 3]);
        assert_eq!(sizes(&take_batch(&mut waiting, 6)), [5, 1]);
        assert!(take_batch(&mut waiting, 6).is_empty());
        let mut waiting: Waiting = [9, 1].map(revocation).into();
        assert_eq!(
            sizes(&take_batch(&mut waiting, 6)),
            [9],
            "one revocation larger than a write still goes, alone"
        );
        assert_eq!(sizes(&take_batch(&mut waiting, 6)), [1]);
    }

    #[test]
    fn an_entry_stored_recently_is_not_written_again() {
        let mut recent = Recent::default();
        assert!(!recent.holds("a"));
        recent.add(["a".to_string(), "b".to_string()].into_iter());
        assert!(recent.holds("a") && recent.holds("b") && !recent.holds("c"));
        recent
            .stored
            .insert("old".into(), Instant::now() - REMEMBERED);
        assert!(!recent.holds("old"), "forgotten after a while");
        recent.pruned = Some(Instant::now() - REMEMBERED);
        recent.add(std::iter::once("c".to_string()));
        assert!(!recent.stored.contains_key("old"), "and pruned");
        assert!(recent.holds("a") && recent.holds("c"));
    }

    #[test]
    fn shards_spread_ids_and_are_stable() {
        let names: std::collections::BTreeSet<_> =
            (0..1000).map(|i| shard_name(&format!("id-{i}"))).collect();
        assert_eq!(names.len(), SHARDS as usize);
        assert_eq!(shard_name("abc"), shard_name("abc"));
    }
}
