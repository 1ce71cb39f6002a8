//! Secondary indexes over watched objects: find an object by a key (a token
//! id, a token hash, a client id) without scanning the whole store, so a
//! request costs the same with ten tokens or fifty thousand.
//!
//! A key claimed by two objects finds neither: whichever answer the index
//! gave would be a guess, and a guess could hand one object's token to
//! another. The clash is logged once, when it appears.
//!
//! Keys are held as 64-bit keyed hashes, not as strings (a token's id and
//! fingerprint would be most of the index's bytes). Two keys with one hash
//! count as a clash, so a collision can only hide an object, never find the
//! wrong one; and every caller checks the object it finds holds the key.

use std::{
    collections::{HashMap, hash_map::Entry},
    fmt,
    hash::{BuildHasher, Hash, RandomState},
    sync::{Arc, RwLock},
};

use kube::{
    Resource,
    runtime::{reflector::ObjectRef, watcher},
};
use tracing::warn;

/// An object as the index refers to it: its namespace and name only, shared
/// by all its keys (the index holds one per token, so every byte counts).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Named {
    namespace: Option<Box<str>>,
    name: Box<str>,
}

type Object = Arc<Named>;

impl Named {
    fn of<K: Resource>(object: &K) -> Self {
        let meta = object.meta();
        Self {
            namespace: meta.namespace.as_deref().map(Into::into),
            name: meta.name.as_deref().unwrap_or_default().into(),
        }
    }

    fn object_ref<K: Resource<DynamicType = ()>>(&self) -> ObjectRef<K> {
        let reference = ObjectRef::new(&self.name);
        match &self.namespace {
            Some(namespace) => reference.within(namespace),
            None => reference,
        }
    }
}

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The objects claiming one key's hash: nearly always one, held without a
/// list of its own.
enum Claimants {
    One(Object),
    /// More than one: a clash.
    Many(Vec<Object>),
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<u64, Claimants>,
    keys_of_object: HashMap<Object, Box<[u64]>>,
}

impl Entries {
    fn remove(&mut self, object: &Named) {
        let Some(keys) = self.keys_of_object.remove(object) else {
            return;
        };
        for key in keys.iter() {
            let Some(claimants) = self.by_key.get_mut(key) else {
                continue;
            };
            match claimants {
                Claimants::One(only) if only.as_ref() == object => {
                    self.by_key.remove(key);
                }
                Claimants::One(_) => {}
                Claimants::Many(all) => {
                    all.retain(|o| o.as_ref() != object);
                    if all.len() == 1 {
                        *claimants = Claimants::One(all.remove(0));
                    }
                }
            }
        }
    }

    /// Files `object` under `keys`; the first claimant of a key it now
    /// shares with another, if it made such a clash.
    fn insert(&mut self, object: Named, keys: Box<[u64]>) -> Option<(Object, Object)> {
        self.remove(&object);
        if keys.is_empty() {
            return None;
        }
        let mut clash = None;
        let object = Arc::new(object);
        for key in keys.iter() {
            match self.by_key.entry(*key) {
                Entry::Vacant(vacant) => {
                    vacant.insert(Claimants::One(object.clone()));
                }
                Entry::Occupied(mut occupied) => {
                    let claimants = occupied.get_mut();
                    let first = match claimants {
                        Claimants::One(only) if *only == object => continue,
                        Claimants::One(only) => {
                            let first = only.clone();
                            *claimants = Claimants::Many(vec![first.clone(), object.clone()]);
                            Some(first)
                        }
                        Claimants::Many(all) => {
                            if !all.contains(&object) {
                                all.push(object.clone());
                            }
                            None
                        }
                    };
                    if let Some(first) = first {
                        clash.get_or_insert((first, object.clone()));
                    }
                }
            }
        }
        self.keys_of_object.insert(object, keys);
        clash
    }
}

struct State {
    live: Entries,
    /// Filled during a (re)list, swapped in when it is done, as the
    /// reflector does with its store.
    relisting: Option<Entries>,
}

/// Objects of kind `K` by the keys `keys_of` gives each.
#[derive(Clone)]
pub struct KeyIndex<K: Resource<DynamicType = ()>> {
    state: Arc<RwLock<State>>,
    keys_of: fn(&K) -> Vec<String>,
    /// Whether a key belongs to one object only, so that a second claimant
    /// is a clash worth a warning; otherwise the caller chooses among the
    /// claimants (see [`KeyIndex::claimants`]).
    exclusive: bool,
    /// Keyed per process: no one can choose keys that collide.
    hasher: RandomState,
}

impl<K> KeyIndex<K>
where
    K: Resource<DynamicType = ()> + Clone,
{
    /// An index whose keys each belong to one object.
    pub fn new(keys_of: fn(&K) -> Vec<String>) -> Self {
        Self::with(keys_of, true)
    }

    /// An index whose keys several objects may claim at once, by design:
    /// read it with [`KeyIndex::claimants`].
    pub fn shared(keys_of: fn(&K) -> Vec<String>) -> Self {
        Self::with(keys_of, false)
    }

    fn with(keys_of: fn(&K) -> Vec<String>, exclusive: bool) -> Self {
        Self {
            state: Arc::new(RwLock::new(State {
                live: Entries::default(),
                relisting: None,
            })),
            keys_of,
            exclusive,
            hasher: RandomState::new(),
        }
    }

    /// `object`'s keys, hashed. Outside the lock: `keys_of` may decode the
    /// object, and lookups should not wait for that.
    fn hashes(&self, object: &K) -> Box<[u64]> {
        (self.keys_of)(object)
            .iter()
            .map(|key| self.hasher.hash_one(key.as_str()))
            .collect()
    }

    /// Follows one watch event.
    pub fn apply(&self, event: &watcher::Event<K>) {
        let keys = match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                self.hashes(object)
            }
            _ => Box::default(),
        };
        let mut state = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let clash = match event {
            watcher::Event::Apply(object) => state.live.insert(Named::of(object), keys),
            watcher::Event::Delete(object) => {
                state.live.remove(&Named::of(object));
                None
            }
            watcher::Event::Init => {
                state.relisting = Some(Entries::default());
                None
            }
            watcher::Event::InitApply(object) => state
                .relisting
                .get_or_insert_with(Entries::default)
                .insert(Named::of(object), keys),
            watcher::Event::InitDone => {
                if let Some(fresh) = state.relisting.take() {
                    state.live = fresh;
                }
                None
            }
        };
        if let Some((first, second)) = clash
            && self.exclusive
        {
            warn!(
                %first,
                %second,
                "two objects claim the same token key; neither is served by it"
            );
        }
    }

    /// Every object that claims `key`. A hash collision can add one that
    /// does not: the caller checks each holds the key.
    pub fn claimants(&self, key: &str) -> Vec<ObjectRef<K>> {
        let state = self
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match state.live.by_key.get(&self.hasher.hash_one(key)) {
            None => Vec::new(),
            Some(Claimants::One(only)) => vec![only.object_ref()],
            Some(Claimants::Many(all)) => all.iter().map(|o| o.object_ref()).collect(),
        }
    }

    /// The object `key` belongs to.
    pub fn get(&self, key: &str) -> Option<ObjectRef<K>> {
        let state = self
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = self.hasher.hash_one(key);
        match state.live.by_key.get(&key)? {
            Claimants::One(only) => Some(only.object_ref()),
            Claimants::Many(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn config_map(name: &str, keys: &[&str]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: Some(
                keys.iter()
                    .map(|k| (k.to_string(), String::new()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn index() -> KeyIndex<ConfigMap> {
        KeyIndex::new(|cm| cm.data.iter().flatten().map(|(k, _)| k.clone()).collect())
    }

    #[test]
    fn follows_applies_and_deletes() {
        let index = index();
        index.apply(&watcher::Event::Apply(config_map("a", &["x", "y"])));
        assert_eq!(index.get("x").unwrap().name, "a");
        index.apply(&watcher::Event::Apply(config_map("a", &["y", "z"])));
        assert!(
            index.get("x").is_none(),
            "a key the object no longer has is forgotten"
        );
        assert_eq!(index.get("z").unwrap().name, "a");
        index.apply(&watcher::Event::Delete(config_map("a", &["y", "z"])));
        assert!(index.get("y").is_none());
    }

    #[test]
    fn a_key_claimed_twice_finds_neither_until_one_lets_go() {
        let index = index();
        index.apply(&watcher::Event::Apply(config_map(
            "victim",
            &["shared", "v"],
        )));
        index.apply(&watcher::Event::Apply(config_map("copy", &["shared"])));
        assert!(index.get("shared").is_none());
        assert_eq!(index.get("v").unwrap().name, "victim");
        index.apply(&watcher::Event::Delete(config_map("copy", &["shared"])));
        assert_eq!(index.get("shared").unwrap().name, "victim");
    }

    #[test]
    fn a_shared_key_lists_every_claimant() {
        let index = KeyIndex::<ConfigMap>::shared(|cm| {
            cm.data.iter().flatten().map(|(k, _)| k.clone()).collect()
        });
        let names = |key: &str| {
            let mut names: Vec<_> = index.claimants(key).into_iter().map(|r| r.name).collect();
            names.sort();
            names
        };
        assert!(names("path").is_empty());
        index.apply(&watcher::Event::Apply(config_map("first", &["path"])));
        assert_eq!(names("path"), ["first"]);
        index.apply(&watcher::Event::Apply(config_map(
            "second",
            &["path", "own"],
        )));
        assert_eq!(names("path"), ["first", "second"]);
        assert_eq!(names("own"), ["second"]);
        index.apply(&watcher::Event::Delete(config_map("first", &["path"])));
        assert_eq!(names("path"), ["second"]);
    }

    #[test]
    fn a_relist_replaces_everything_once_done() {
        let index = index();
        index.apply(&watcher::Event::Apply(config_map("gone", &["old"])));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(config_map("kept", &["new"])));
        assert!(
            index.get("old").is_some(),
            "the old view serves until the relist is done"
        );
        index.apply(&watcher::Event::InitDone);
        assert!(index.get("old").is_none());
        assert_eq!(index.get("new").unwrap().name, "kept");
    }
}
