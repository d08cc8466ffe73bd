//! The ids under one key of the SCIM indexes, in order.
//!
//! Nearly every key (a `userName`, an address, an `externalId`, the groups of one member) holds
//! one id or a few. A `BTreeSet` allocates a node of eleven slots even for one, about 270 bytes
//! with `String` ids: with eight such keys per user that was about a fifth of a replica's SCIM
//! copy at 100,000 users (issue 15). So up to [`FEW`] ids are a sorted vector sized to fit, and a
//! key shared by more (many users with one address, a member of hundreds of groups) becomes a
//! `BTreeSet`, so that inserting into it stays O(log n).

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::collections::btree_set;

/// Above this many ids a key's ids are kept in a `BTreeSet`.
const FEW: usize = 8;

#[derive(Debug, Clone)]
pub enum IdSet<T> {
    /// Sorted, no duplicates, capacity equal to length.
    Few(Vec<T>),
    Many(BTreeSet<T>),
}

impl<T> Default for IdSet<T> {
    fn default() -> Self {
        IdSet::Few(Vec::new())
    }
}

impl<T: Ord> IdSet<T> {
    /// Adds `id`; false when it was there already.
    pub fn insert(&mut self, id: T) -> bool {
        match self {
            IdSet::Few(v) => match v.binary_search(&id) {
                Ok(_) => false,
                Err(at) if v.len() < FEW => {
                    v.reserve_exact(1);
                    v.insert(at, id);
                    true
                }
                Err(_) => {
                    let mut set: BTreeSet<T> = std::mem::take(v).into_iter().collect();
                    set.insert(id);
                    *self = IdSet::Many(set);
                    true
                }
            },
            IdSet::Many(s) => s.insert(id),
        }
    }

    /// Removes `id`; false when it was not there.
    pub fn remove<Q>(&mut self, id: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        match self {
            IdSet::Few(v) => match v.binary_search_by(|x| x.borrow().cmp(id)) {
                Ok(at) => {
                    v.remove(at);
                    v.shrink_to_fit();
                    true
                }
                Err(_) => false,
            },
            IdSet::Many(s) => s.remove(id),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            IdSet::Few(v) => v.is_empty(),
            IdSet::Many(s) => s.is_empty(),
        }
    }

    /// The ids in order.
    pub fn iter(&self) -> Iter<'_, T> {
        match self {
            IdSet::Few(v) => Iter::Few(v.iter()),
            IdSet::Many(s) => Iter::Many(s.iter()),
        }
    }
}

pub enum Iter<'a, T> {
    Few(std::slice::Iter<'a, T>),
    Many(btree_set::Iter<'a, T>),
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        match self {
            Iter::Few(i) => i.next(),
            Iter::Many(i) => i.next(),
        }
    }
}

impl<'a, T: Ord> IntoIterator for &'a IdSet<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the inserts and removals, and on either side of [`FEW`], the set answers as
        /// a `BTreeSet` does: the same results and the same ids in the same order.
        #[test]
        fn behaves_as_a_btreeset(ops in proptest::collection::vec((any::<bool>(), 0..24u8), 0..80)) {
            let mut set: IdSet<String> = IdSet::default();
            let mut reference = BTreeSet::new();
            for (add, n) in ops {
                let id = format!("id-{n:02}");
                if add {
                    prop_assert_eq!(set.insert(id.clone()), reference.insert(id));
                } else {
                    prop_assert_eq!(set.remove(id.as_str()), reference.remove(id.as_str()));
                }
                prop_assert_eq!(set.is_empty(), reference.is_empty());
                prop_assert_eq!(set.iter().collect::<Vec<_>>(), reference.iter().collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_few_ids_take_no_more_room_than_they_need() {
        let mut set = IdSet::default();
        set.insert("b".to_owned());
        set.insert("a".to_owned());
        let IdSet::Few(v) = &set else {
            panic!("two ids are few");
        };
        assert_eq!(v.capacity(), 2);
        for n in 0..FEW {
            set.insert(format!("c{n}"));
        }
        assert!(matches!(set, IdSet::Many(_)));
    }
}
