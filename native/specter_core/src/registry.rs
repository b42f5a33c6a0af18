//! `Registry<V>`: the objects of one kind an instance hosts, keyed by UUID, and the ids of
//! recently closed ones, so a lookup tells `:closed` from `:not_found`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// Why a lookup found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Not a UUID, or never registered here.
    NotFound,
    /// Registered once, and removed since.
    Closed,
}

/// Locks a mutex, recovering the data if a panic elsewhere poisoned it: every structure
/// guarded by Specter stays consistent between statements, so the data is still valid.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Canonical (lowercase, hyphenated) form of a UUID string, or `None` if it is not one.
pub fn normalize_id(id: &str) -> Option<String> {
    uuid::Uuid::parse_str(id).ok().map(|u| u.hyphenated().to_string())
}

/// A fresh id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// How many closed ids are remembered per registry.
const TOMBSTONES: usize = 65_536;

/// Recently closed ids, bounded.
#[derive(Default)]
struct Tombstones {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Tombstones {
    fn insert(&mut self, id: &str) {
        if self.set.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
            while self.order.len() > TOMBSTONES {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// Live objects by id, and (for kinds whose lookups tell `:closed` from `:not_found`) the
/// ids of the ones removed.
pub struct Registry<V> {
    live: Mutex<HashMap<String, V>>,
    closed: Option<Mutex<Tombstones>>,
}

impl<V> Default for Registry<V> {
    /// A registry that forgets removed ids: looking one up again is `NotFound`.
    fn default() -> Self {
        Self { live: Mutex::default(), closed: None }
    }
}

impl<V> Registry<V> {
    /// A registry that remembers removed ids: looking one up again is `Closed`.
    pub fn remembering() -> Self {
        Self { live: Mutex::default(), closed: Some(Mutex::default()) }
    }

    fn tombstone(&self, id: &str) {
        if let Some(closed) = &self.closed {
            lock(closed).insert(id);
        }
    }
}

impl<V: Clone> Registry<V> {
    /// The object with this id (any UUID spelling): `:not_found` for an id that is not a
    /// UUID or was never here, `:closed` for one that was removed.
    pub fn get(&self, id: &str) -> Result<V, Missing> {
        let key = normalize_id(id).ok_or(Missing::NotFound)?;
        if let Some(v) = lock(&self.live).get(&key) {
            return Ok(v.clone());
        }
        if self.closed.as_ref().is_some_and(|c| lock(c).set.contains(&key)) {
            Err(Missing::Closed)
        } else {
            Err(Missing::NotFound)
        }
    }

    /// Every live object.
    pub fn values(&self) -> Vec<V> {
        lock(&self.live).values().cloned().collect()
    }
}

impl<V> Registry<V> {
    pub fn insert(&self, id: String, value: V) {
        lock(&self.live).insert(id, value);
    }

    /// Removes an object, remembering that it was closed.
    pub fn remove(&self, id: &str) -> Option<V> {
        let removed = lock(&self.live).remove(id);
        self.tombstone(id);
        removed
    }

    /// Removes every object for which `remove` is true, remembering them as closed, and
    /// returns them.
    pub fn remove_where(&self, mut remove: impl FnMut(&V) -> bool) -> Vec<V> {
        let mut live = lock(&self.live);
        let ids: Vec<String> =
            live.iter().filter(|(_, v)| remove(v)).map(|(id, _)| id.clone()).collect();
        ids.iter()
            .filter_map(|id| {
                self.tombstone(id);
                live.remove(id)
            })
            .collect()
    }

    /// Removes everything (the instance is going away).
    pub fn drain(&self) -> Vec<V> {
        lock(&self.live).drain().map(|(_, v)| v).collect()
    }

    pub fn contains(&self, id: &str) -> bool {
        normalize_id(id).is_some_and(|key| lock(&self.live).contains_key(&key))
    }

    pub fn len(&self) -> usize {
        lock(&self.live).len()
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.live).is_empty()
    }

    /// The map itself, for a change that must see and edit several entries at once.
    pub fn entries(&self) -> MutexGuard<'_, HashMap<String, V>> {
        lock(&self.live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_tell_closed_from_unknown() {
        let r: Registry<u32> = Registry::remembering();
        let id = new_id();
        r.insert(id.clone(), 7);
        assert_eq!(r.get(&id.to_uppercase()), Ok(7));
        assert_eq!(r.remove(&id), Some(7));
        assert_eq!(r.get(&id), Err(Missing::Closed));
        assert_eq!(r.get(&new_id()), Err(Missing::NotFound));
        assert_eq!(r.get("not a uuid"), Err(Missing::NotFound));

        let forgetful: Registry<u32> = Registry::default();
        forgetful.insert(id.clone(), 1);
        forgetful.remove(&id);
        assert_eq!(forgetful.get(&id), Err(Missing::NotFound));
    }

    #[test]
    fn remove_where_tombstones_what_it_removes() {
        let r: Registry<u32> = Registry::remembering();
        let (a, b) = (new_id(), new_id());
        r.insert(a.clone(), 1);
        r.insert(b.clone(), 2);
        assert_eq!(r.remove_where(|v| *v == 1), vec![1]);
        assert_eq!(r.get(&a), Err(Missing::Closed));
        assert_eq!(r.get(&b), Ok(2));
        assert_eq!(r.len(), 1);
    }
}
