//! A small cache of values decoded from session records, keyed by session id and checked against
//! the exact text they were decoded from (issue 15).
//!
//! A launch used to decode the same stored record and the same signed-in state again on every
//! request. A hit here returns a copy of what decoding that very text gave before, so nothing is
//! read from it that the stored bytes do not say: a record changed by another replica, signed out
//! or expired has other bytes (or none) and is decoded afresh, and every check made on the decoded
//! state (lifetimes, leaver, policy) still runs on each request.

use std::collections::HashMap;

use parking_lot::Mutex;
use tower_sessions::session::Id;

/// How many sessions a cache keeps by default: beyond that it starts again empty, which bounds
/// its memory (a few MB of records) at the cost of a burst of decodes.
pub const DEFAULT_CAP: usize = 4096;

pub struct DecodedCache<T> {
    entries: Mutex<HashMap<Id, (String, T)>>,
    cap: usize,
}

impl<T> std::fmt::Debug for DecodedCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedCache")
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl<T: Clone> Default for DecodedCache<T> {
    fn default() -> Self {
        Self::with_cap(DEFAULT_CAP)
    }
}

impl<T: Clone> DecodedCache<T> {
    pub fn with_cap(cap: usize) -> Self {
        DecodedCache {
            entries: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    /// What `decode(text)` gives, from the cache when session `id` was last decoded from this
    /// very `text`. Failures are not kept.
    pub fn get_or_decode<E>(
        &self,
        id: Id,
        text: &str,
        decode: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, E> {
        if let Some((seen, value)) = self.entries.lock().get(&id)
            && seen == text
        {
            return Ok(value.clone());
        }
        let value = decode(text)?;
        self.remember(id, text.to_owned(), value.clone());
        Ok(value)
    }

    /// Whether the value session `id` was last read or written as satisfies `same`.
    pub fn holds_where(&self, id: &Id, same: impl FnOnce(&T) -> bool) -> bool {
        self.entries
            .lock()
            .get(id)
            .is_some_and(|(_, value)| same(value))
    }

    /// Keeps `value` as what `text` decodes to (a store that has just written `text` knows).
    pub fn remember(&self, id: Id, text: String, value: T) {
        let mut entries = self.entries.lock();
        if entries.len() >= self.cap && !entries.contains_key(&id) {
            entries.clear();
        }
        entries.insert(id, (text, value));
    }

    /// Forgets session `id` (deleted).
    pub fn forget(&self, id: &Id) {
        self.entries.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn the_same_text_is_decoded_once_and_other_text_again() {
        let cache = DecodedCache::<u32>::default();
        let id = Id::default();
        let decodes = Cell::new(0);
        let decode = |t: &str| {
            decodes.set(decodes.get() + 1);
            t.parse::<u32>()
        };
        assert_eq!(cache.get_or_decode(id, "7", decode), Ok(7));
        assert_eq!(cache.get_or_decode(id, "7", decode), Ok(7));
        assert_eq!(decodes.get(), 1);
        // Changed bytes (another replica wrote the record): decoded afresh, never the old value.
        assert_eq!(cache.get_or_decode(id, "8", decode), Ok(8));
        assert_eq!(decodes.get(), 2);
        // Another session with the same text is its own entry.
        assert_eq!(cache.get_or_decode(Id::default(), "8", decode), Ok(8));
        assert_eq!(decodes.get(), 3);
    }

    #[test]
    fn a_failure_is_not_kept_and_forget_drops_the_entry() {
        let cache = DecodedCache::<u32>::default();
        let id = Id::default();
        assert!(cache.get_or_decode(id, "x", |t| t.parse::<u32>()).is_err());
        assert!(cache.is_empty());
        cache.remember(id, "1".into(), 1);
        cache.forget(&id);
        assert!(cache.is_empty());
    }

    #[test]
    fn it_never_holds_more_than_its_cap() {
        let cache = DecodedCache::<u32>::with_cap(3);
        for n in 0..10u32 {
            cache.remember(Id::default(), n.to_string(), n);
            assert!(cache.len() <= 3);
        }
        // Replacing a held session needs no room.
        let id = Id::default();
        cache.remember(id, "1".into(), 1);
        let before = cache.len();
        cache.remember(id, "2".into(), 2);
        assert_eq!(cache.len(), before);
    }
}
