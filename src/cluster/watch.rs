//! One watch of one kind, shared by everything in the process that reads it.
//!
//! A [`Watched`] is a cache (a kube [`Store`]) filled by a single watch, and
//! any number of subscriptions that are told about every object that
//! changed, after the cache holds the change: the reconcilers' triggers and
//! the token service's indexes read the same cache instead of watching the
//! kind again.
//!
//! kube's own shared streams were not used: they pass on no deletions, a
//! subscriber that lags blocks the watch (and so the token service), and an
//! object deleted before a subscriber reads it stalls that subscriber.
//! Here each subscription is an unbounded channel of [`Notice`]s: every
//! change, deletions included, and a mark at each relist, when changes may
//! have been missed (objects deleted while the watch was down among them).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{
    Stream, StreamExt,
    channel::mpsc::{UnboundedSender, unbounded},
    stream::BoxStream,
};
use kube::{
    Api, Resource,
    runtime::{
        reflector::{ObjectRef, Store, store::Writer},
        watcher::{self, watcher},
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::decoded::{Decoded, Undecodable};

/// Called with every event after the cache applied it, before subscribers
/// hear of it: for indexes that must agree with the cache.
pub type Hook<K> = Box<dyn Fn(&watcher::Event<K>) + Send + Sync>;

/// Shapes each object before it is cached, e.g. to drop what no reader needs.
pub type Projection<K> = Box<dyn Fn(&mut K) + Send + Sync>;

/// What a watch can cache and share.
pub trait Object: Resource<DynamicType = ()> + Clone + Send + Sync + 'static {}
impl<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static> Object for K {}

/// What a subscription is told.
#[derive(Debug, Clone)]
pub enum Notice<K> {
    /// The object changed (or was deleted: then its last state).
    Changed(Arc<K>),
    /// The watch listed every object again, after it could not resume: any
    /// change since the last notice may have been missed. No objects come
    /// with it: a subscriber looks at the cache if it must, so a relist
    /// of 100 000 objects does not queue 100 000 of them for each.
    Relisted,
}

type Subscribers<K> = Arc<Mutex<Vec<UnboundedSender<Notice<K>>>>>;

/// Objects of one kind that could not be decoded, by namespace and name.
pub type UndecodableObjects = Arc<Mutex<HashMap<(Option<String>, String), Box<Undecodable>>>>;

/// The shared view of one watch.
pub struct Watched<K: Object> {
    store: Store<K>,
    subscribers: Subscribers<K>,
    listed: watch::Receiver<bool>,
    undecodable: UndecodableObjects,
}

impl<K: Object> Clone for Watched<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            subscribers: self.subscribers.clone(),
            listed: self.listed.clone(),
            undecodable: self.undecodable.clone(),
        }
    }
}

/// A watch not started yet: hooks are added here, then it is run once.
pub struct Pending<K: Object> {
    kind: String,
    events: BoxStream<'static, Result<watcher::Event<Decodable<K>>, watcher::Error>>,
    writer: Writer<K>,
    store: Store<K>,
    hooks: Vec<Hook<K>>,
    projection: Option<Projection<K>>,
    subscribers: Subscribers<K>,
    listed: watch::Sender<bool>,
    undecodable: UndecodableObjects,
    /// (uid, reason) of every undecodable object already named in the log.
    named: Mutex<HashSet<(String, String)>>,
}

type Decodable<K> = Result<K, Box<Undecodable>>;

/// Retries a failed watch quickly and steadily: after an API-server restart
/// the operator should see changes within seconds, not after a backoff that
/// grew during the outage (kube's default reaches 30 s).
struct WatchBackoff {
    next: Duration,
}

const FIRST_RETRY: Duration = Duration::from_millis(250);
const LONGEST_RETRY: Duration = Duration::from_secs(2);

impl WatchBackoff {
    fn new() -> Self {
        Self { next: FIRST_RETRY }
    }

    /// How long to wait before the next attempt.
    fn delay(&mut self) -> Duration {
        let now = self.next;
        self.next = (now * 2).min(LONGEST_RETRY);
        now
    }

    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

impl<K: Object + DeserializeOwned + std::fmt::Debug> Watched<K> {
    /// A watch of a kind whose every object the Rust type holds (built-in
    /// kinds, validated by the API server).
    pub fn new(api: Api<K>, config: watcher::Config) -> (Self, Pending<K>) {
        let events = watcher(api, config)
            .map(|event| event.map(|e| map_event(e, Ok)))
            .boxed();
        Self::from_events(events)
    }

    /// A watch of one of the operator's own kinds: an object that does not
    /// decode is named in the log and left out of the cache (as if deleted)
    /// instead of failing the watch of every other object.
    pub fn tolerant(api: Api<Decoded<K>>, config: watcher::Config) -> (Self, Pending<K>) {
        Self::tolerant_converted(api, config, Ok)
    }
}

impl<K: Object> Watched<K> {
    /// [`Watched::tolerant`], the objects converted before they are cached;
    /// one that cannot be is undecodable too.
    pub fn tolerant_converted<S>(
        api: Api<Decoded<S>>,
        config: watcher::Config,
        convert: impl Fn(S) -> Result<K, Box<Undecodable>> + Send + 'static,
    ) -> (Self, Pending<K>)
    where
        S: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        let events = watcher(api, config)
            .map(move |event| event.map(|e| map_event(e, |d| d.0.and_then(&convert))))
            .boxed();
        Self::from_events(events)
    }

    /// A watch whose objects are converted before they are cached: to a
    /// record smaller than the Kubernetes object, say.
    pub fn converted<S>(
        api: Api<S>,
        config: watcher::Config,
        convert: impl Fn(S) -> K + Send + 'static,
    ) -> (Self, Pending<K>)
    where
        S: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        let events = watcher(api, config)
            .map(move |event| event.map(|e| map_event(e, |o| Ok(convert(o)))))
            .boxed();
        Self::from_events(events)
    }

    fn from_events(
        events: BoxStream<'static, Result<watcher::Event<Decodable<K>>, watcher::Error>>,
    ) -> (Self, Pending<K>) {
        let writer = Writer::default();
        let store = writer.as_reader();
        let (listed_tx, listed) = watch::channel(false);
        let subscribers = Subscribers::default();
        let undecodable = UndecodableObjects::default();
        let watched = Self {
            store: store.clone(),
            subscribers: subscribers.clone(),
            listed,
            undecodable: undecodable.clone(),
        };
        let pending = Pending {
            kind: K::kind(&()).into_owned(),
            events,
            writer,
            store,
            hooks: Vec::new(),
            projection: None,
            subscribers,
            listed: listed_tx,
            undecodable,
            named: Mutex::default(),
        };
        (watched, pending)
    }

    /// A view of fixed objects, without a watch: for benchmarks and tests.
    pub fn fixed(objects: Vec<K>, hooks: Vec<Hook<K>>) -> Self {
        let (watched, mut pending) = Self::from_events(futures::stream::empty().boxed());
        pending.hooks = hooks;
        for event in std::iter::once(watcher::Event::Init)
            .chain(
                objects
                    .into_iter()
                    .map(|o| watcher::Event::InitApply(Ok(o))),
            )
            .chain(std::iter::once(watcher::Event::InitDone))
        {
            pending.handle(event);
        }
        // The cache keeps its contents once its writer is gone.
        watched
    }

    /// The cache.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object that changes from now on (deleted ones included), after
    /// the cache holds the change, and a [`Notice::Relisted`] at each list
    /// (the first too, if it is not done yet). Not the objects already
    /// cached: a controller looks at every object of its kind when it
    /// starts anyway (`controller::pace`).
    pub fn subscribe(&self) -> impl Stream<Item = Notice<K>> + Send + 'static {
        let (sender, receiver) = unbounded();
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(sender);
        receiver
    }

    /// Waits for the first list; `false` if the watch stopped before it.
    pub async fn listed(&self) -> bool {
        let mut listed = self.listed.clone();
        listed.wait_for(|done| *done).await.is_ok()
    }

    /// Objects of this kind that could not be decoded, with the reason.
    pub fn undecodable(&self) -> Vec<Undecodable> {
        self.undecodable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .map(|u| u.as_ref().clone())
            .collect()
    }
}

impl<K: Object> Pending<K> {
    /// Adds an index that follows the cache.
    pub fn hook(&mut self, hook: impl Fn(&watcher::Event<K>) + Send + Sync + 'static) {
        self.hooks.push(Box::new(hook));
    }

    /// Shapes each object before it is cached.
    pub fn project(&mut self, projection: impl Fn(&mut K) + Send + Sync + 'static) {
        self.projection = Some(Box::new(projection));
    }

    /// Runs the watch; it only ends if the process is stopping.
    pub async fn run(mut self) {
        let mut failing = false;
        let mut backoff = WatchBackoff::new();
        while let Some(item) = self.events.next().await {
            let error = match item {
                Ok(event) => {
                    if std::mem::take(&mut failing) {
                        info!(kind = %self.kind, "watch resumed");
                    }
                    backoff.reset();
                    self.handle(event);
                    continue;
                }
                // Too old to resume (410 Gone, routine and also what follows
                // an API-server restart): it lists again at once.
                Err(error) if is_expired(&error) => {
                    debug!(kind = %self.kind, %error, "watch expired; listing again");
                    continue;
                }
                Err(error) => error,
            };
            // Logged once per outage: a retry every couple of seconds would
            // otherwise fill the log while the API server is down.
            if std::mem::replace(&mut failing, true) {
                debug!(kind = %self.kind, %error, "watch still failing");
            } else {
                warn!(kind = %self.kind, %error, "watch failed; retrying");
            }
            tokio::time::sleep(backoff.delay()).await;
        }
    }

    fn handle(&mut self, event: watcher::Event<Decodable<K>>) {
        let Some(mut event) = self.decoded(event) else {
            return;
        };
        if let Some(project) = &self.projection {
            match &mut event {
                watcher::Event::Apply(object)
                | watcher::Event::Delete(object)
                | watcher::Event::InitApply(object) => project(object),
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        }
        self.writer.apply_watcher_event(&event);
        for hook in &self.hooks {
            hook(&event);
        }
        let notice = match &event {
            watcher::Event::Apply(object) => self
                .store
                .get(&ObjectRef::from_obj(object))
                .map(Notice::Changed),
            watcher::Event::Delete(object) => Some(Notice::Changed(Arc::new(object.clone()))),
            watcher::Event::InitDone => Some(Notice::Relisted),
            watcher::Event::Init | watcher::Event::InitApply(_) => None,
        };
        if let Some(notice) = notice {
            self.subscribers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .retain(|subscriber| subscriber.unbounded_send(notice.clone()).is_ok());
        }
        if matches!(event, watcher::Event::InitDone) {
            self.listed.send_replace(true);
        }
    }

    /// The event for the cache: an object that does not decode is left out
    /// of it (removed, if an earlier version was cached) and named once.
    fn decoded(&self, event: watcher::Event<Decodable<K>>) -> Option<watcher::Event<K>> {
        use watcher::Event::*;
        let mut undecodable = self
            .undecodable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key_of = |meta: &kube::api::ObjectMeta| {
            (
                meta.namespace.clone(),
                meta.name.clone().unwrap_or_default(),
            )
        };
        let cached = |meta: &kube::api::ObjectMeta| {
            let mut reference = ObjectRef::<K>::new(meta.name.as_deref().unwrap_or_default());
            if let Some(namespace) = &meta.namespace {
                reference = reference.within(namespace);
            }
            self.store.get(&reference)
        };
        Some(match event {
            Init => {
                undecodable.clear();
                Init
            }
            InitDone => InitDone,
            InitApply(Ok(object)) => InitApply(object),
            Apply(Ok(object)) => {
                undecodable.remove(&key_of(object.meta()));
                Apply(object)
            }
            Delete(Ok(object)) => {
                undecodable.remove(&key_of(object.meta()));
                Delete(object)
            }
            Delete(Err(gone)) => {
                undecodable.remove(&key_of(&gone.meta));
                Delete(cached(&gone.meta)?.as_ref().clone())
            }
            InitApply(Err(bad)) | Apply(Err(bad)) => {
                // Named once per object and reason: not again for a status
                // written about it, nor at every relist.
                let naming = (bad.meta.uid.clone().unwrap_or_default(), bad.reason.clone());
                if self
                    .named
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(naming)
                {
                    warn!(
                        kind = %self.kind,
                        namespace = bad.meta.namespace.as_deref(),
                        name = bad.meta.name.as_deref(),
                        reason = %bad.reason,
                        "object cannot be decoded; ignored until it is fixed"
                    );
                }
                let previous = cached(&bad.meta);
                undecodable.insert(key_of(&bad.meta), bad);
                Delete(previous?.as_ref().clone())
            }
        })
    }
}

/// Whether the watch failed only because its resourceVersion is too old.
fn is_expired(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// The same event with its object converted.
fn map_event<A, B>(event: watcher::Event<A>, convert: impl Fn(A) -> B) -> watcher::Event<B> {
    use watcher::Event::*;
    match event {
        Apply(object) => Apply(convert(object)),
        Delete(object) => Delete(convert(object)),
        Init => Init,
        InitApply(object) => InitApply(convert(object)),
        InitDone => InitDone,
    }
}

/// Drops what no reader of a cached object needs: the field-manager
/// bookkeeping and `kubectl apply`'s copy of the whole object.
pub fn strip_bookkeeping<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    drop_last_applied(meta);
}

/// Drops `kubectl apply`'s copy of the whole object, which no reader needs.
pub fn drop_last_applied(meta: &mut kube::api::ObjectMeta) {
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{ResourceExt, api::ObjectMeta};

    use super::*;

    fn config_map(name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn bad(name: &str) -> Box<Undecodable> {
        Box::new(Undecodable {
            meta: config_map(name, "9").metadata,
            reason: "data: invalid type".into(),
        })
    }

    fn names(objects: &[Arc<ConfigMap>]) -> Vec<String> {
        let mut names: Vec<_> = objects.iter().map(|o| o.name_any()).collect();
        names.sort();
        names
    }

    /// What a subscription was told so far: names of changed objects, in
    /// order, and "(relisted)".
    fn drain(subscription: &mut (impl Stream<Item = Notice<ConfigMap>> + Unpin)) -> Vec<String> {
        let mut seen = Vec::new();
        while let Some(Some(notice)) = futures::FutureExt::now_or_never(subscription.next()) {
            seen.push(match notice {
                Notice::Changed(object) => object.name_any(),
                Notice::Relisted => "(relisted)".into(),
            });
        }
        seen
    }

    fn relist(pending: &mut Pending<ConfigMap>, objects: Vec<Decodable<ConfigMap>>) {
        pending.handle(watcher::Event::Init);
        for object in objects {
            pending.handle(watcher::Event::InitApply(object));
        }
        pending.handle(watcher::Event::InitDone);
    }

    #[test]
    fn subscribers_hear_of_changes_deletions_and_relists_not_of_the_cache() {
        let (watched, mut pending) =
            Watched::<ConfigMap>::from_events(futures::stream::empty().boxed());
        let mut early = Box::pin(watched.subscribe());
        relist(
            &mut pending,
            vec![Ok(config_map("a", "1")), Ok(config_map("b", "1"))],
        );
        assert_eq!(drain(&mut early), ["(relisted)"]);

        // A late subscriber is not given the cache.
        let mut late = Box::pin(watched.subscribe());
        assert!(drain(&mut late).is_empty());

        pending.handle(watcher::Event::Apply(Ok(config_map("b", "2"))));
        pending.handle(watcher::Event::Delete(Ok(config_map("a", "2"))));
        assert_eq!(drain(&mut early), ["b", "a"]);
        assert_eq!(drain(&mut late), ["b", "a"]);
        assert_eq!(names(&watched.store().state()), ["b"]);

        // "b" was deleted while the watch was down: the relist lacks it, and
        // subscribers are told changes may have been missed.
        relist(&mut pending, vec![Ok(config_map("c", "3"))]);
        assert_eq!(drain(&mut late), ["(relisted)"]);
        assert_eq!(names(&watched.store().state()), ["c"]);
    }

    #[test]
    fn an_undecodable_object_is_named_and_left_out_without_stopping_the_others() {
        let (watched, mut pending) =
            Watched::<ConfigMap>::from_events(futures::stream::empty().boxed());
        relist(
            &mut pending,
            vec![Ok(config_map("good", "1")), Err(bad("bad"))],
        );
        assert!(futures::FutureExt::now_or_never(watched.listed()).unwrap());
        assert_eq!(names(&watched.store().state()), ["good"]);
        assert_eq!(watched.undecodable().len(), 1);

        // A decodable object turning undecodable leaves the cache, as if
        // deleted, and subscribers hear of it.
        let mut subscription = Box::pin(watched.subscribe());
        pending.handle(watcher::Event::Apply(Err(bad("good"))));
        assert!(watched.store().state().is_empty());
        assert_eq!(drain(&mut subscription), ["good"]);

        // Fixed, it is back.
        pending.handle(watcher::Event::Apply(Ok(config_map("good", "10"))));
        pending.handle(watcher::Event::Delete(Err(bad("bad"))));
        assert_eq!(names(&watched.store().state()), ["good"]);
        assert!(watched.undecodable().is_empty());
    }

    #[test]
    fn retries_start_fast_and_stay_short() {
        let mut backoff = WatchBackoff::new();
        let delays: Vec<_> = (0..6).map(|_| backoff.delay()).collect();
        assert_eq!(delays[0], FIRST_RETRY);
        assert!(delays.iter().all(|d| *d <= LONGEST_RETRY));
        assert_eq!(delays[5], LONGEST_RETRY);
        backoff.reset();
        assert_eq!(backoff.delay(), FIRST_RETRY);
    }
}
