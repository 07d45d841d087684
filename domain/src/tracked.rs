//! A map that remembers which keys were written since the last [`Tracked::take_dirty`].
//!
//! Reads go through `Deref` to the inner `BTreeMap`; there is no `DerefMut`, so every
//! mutation has to use a method below and is recorded. That is what lets the state hand
//! the storage layer exactly the entities a command changed, to be written in the same
//! batch as the applied log id, without a diff of the whole state.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

#[derive(Debug, Clone)]
pub(crate) struct Tracked<K: Ord + Clone, V> {
    map: BTreeMap<K, V>,
    dirty: BTreeSet<K>,
    /// Keys written since the last `take_touched`, kept only when watched (a second
    /// consumer that runs per command, unlike persistence which may run per batch).
    touched: Option<BTreeSet<K>>,
}

impl<K: Ord + Clone, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            dirty: BTreeSet::new(),
            touched: None,
        }
    }
}

impl<K: Ord + Clone, V> Deref for Tracked<K, V> {
    type Target = BTreeMap<K, V>;
    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

impl<K: Ord + Clone, V: PartialEq> PartialEq for Tracked<K, V> {
    /// Equal contents; what is pending a write does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: Ord + Clone, V> Tracked<K, V> {
    /// A map that also records the keys written for [`Tracked::take_touched`].
    pub fn watched() -> Self {
        Tracked {
            map: BTreeMap::new(),
            dirty: BTreeSet::new(),
            touched: Some(BTreeSet::new()),
        }
    }

    fn mark(&mut self, key: &K) {
        self.dirty.insert(key.clone());
        if let Some(touched) = &mut self.touched {
            touched.insert(key.clone());
        }
    }

    /// Stops recording written keys for [`Tracked::take_touched`].
    pub fn unwatch(&mut self) {
        self.touched = None;
    }

    /// Whether the map records written keys for [`Tracked::take_touched`].
    pub fn is_watched(&self) -> bool {
        self.touched.is_some()
    }

    /// Whether keys were written since the last [`Tracked::take_touched`].
    pub fn has_touched(&self) -> bool {
        self.touched.as_ref().is_some_and(|t| !t.is_empty())
    }

    /// Records a key for [`Tracked::take_touched`] without writing it.
    pub fn touch(&mut self, key: &K) {
        if let Some(touched) = &mut self.touched {
            touched.insert(key.clone());
        }
    }

    /// Keys written since the last call (always empty unless [`Tracked::watched`]).
    pub fn take_touched(&mut self) -> BTreeSet<K> {
        match &mut self.touched {
            Some(touched) => std::mem::take(touched),
            None => BTreeSet::new(),
        }
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        match self.map.get_key_value(key) {
            Some((k, _)) => {
                let k = k.clone();
                self.mark(&k);
            }
            None => return None,
        }
        self.map.get_mut(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.mark(&key);
        self.map.insert(key, value)
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let (k, v) = self.map.remove_entry(key)?;
        self.mark(&k);
        Some(v)
    }

    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        self.mark(&key);
        self.map.entry(key).or_insert_with(make)
    }

    /// Keys written since the last call, each with its current value (None: removed).
    pub fn take_dirty(&mut self) -> Vec<(K, Option<&V>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|k| {
                let v = self.map.get(&k);
                (k, v)
            })
            .collect()
    }

    /// Keys written since the last [`Tracked::take_dirty`], without taking them.
    pub fn dirty_keys(&self) -> impl Iterator<Item = &K> {
        self.dirty.iter()
    }

    /// Marks a key written although its value did not change (something derived from
    /// it, shown by views, did): it is persisted again and counts as changed.
    pub fn mark_unchanged(&mut self, key: &K) {
        if self.map.contains_key(key) {
            self.mark(key);
        }
    }

    /// Insert while loading from storage: nothing to write back.
    pub fn load(&mut self, key: K, value: V) {
        self.map.insert(key, value);
    }
}

impl<K: Ord + Clone + Serialize, V: Serialize> Serialize for Tracked<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de, K: Ord + Clone + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de>
    for Tracked<K, V>
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Tracked {
            map: BTreeMap::deserialize(d)?,
            dirty: BTreeSet::new(),
            touched: None,
        })
    }
}
