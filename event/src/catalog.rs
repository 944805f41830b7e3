//! A short-lived copy of events and rewards for the claim path.
//!
//! Every claim needs its event and reward before it can be queued, and at a few thousand
//! claims a second two reads per claim are a good share of MongoDB's work for documents
//! that change a few times a day. The copy only serves the checks before the batch (does
//! the reward exist and belong to the event, what it grants): the batch's transaction
//! reads the event and the stock again and decides on those. So a copy at most `ttl` old
//! widens a window that exists anyway (a request reads, its batch commits a little later),
//! and this instance forgets an entry as soon as it changes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most entries kept; past that, expired ones go, and if none has, all of them.
const MAX_ENTRIES: usize = 10_000;

pub struct Cached<T> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Arc<T>)>>,
}

impl<T> Cached<T> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The copy of `id`, if it is younger than the ttl.
    pub fn get(&self, id: &str) -> Option<Arc<T>> {
        let entries = self.entries.lock().expect("never poisoned");
        entries
            .get(id)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, value)| Arc::clone(value))
    }

    pub fn put(&self, id: &str, value: T) -> Arc<T> {
        let value = Arc::new(value);
        if self.ttl.is_zero() {
            return value;
        }
        let mut entries = self.entries.lock().expect("never poisoned");
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(id.to_owned(), (Instant::now(), Arc::clone(&value)));
        value
    }

    pub fn forget(&self, id: &str) {
        self.entries.lock().expect("never poisoned").remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_served_until_they_expire_or_are_forgotten() {
        let cache = Cached::new(Duration::from_secs(60));
        assert!(cache.get("a").is_none());
        cache.put("a", 1);
        assert_eq!(cache.get("a").as_deref(), Some(&1));
        cache.forget("a");
        assert!(cache.get("a").is_none());

        let expired = Cached::new(Duration::from_nanos(1));
        expired.put("a", 1);
        std::thread::yield_now();
        assert!(expired.get("a").is_none());

        let off = Cached::new(Duration::ZERO);
        assert_eq!(*off.put("a", 1), 1);
        assert!(off.get("a").is_none());
    }

    #[test]
    fn the_copy_stays_bounded() {
        let cache = Cached::new(Duration::from_secs(60));
        for i in 0..MAX_ENTRIES + 5 {
            cache.put(&i.to_string(), i);
        }
        assert!(cache.entries.lock().unwrap().len() <= MAX_ENTRIES);
        assert_eq!(
            cache.get(&(MAX_ENTRIES + 4).to_string()).as_deref(),
            Some(&(MAX_ENTRIES + 4))
        );
    }
}
