//! Lookups over the SCIM copy, so that what a request costs grows with its answer and not with
//! the directory (issue 15: 100,000 users, 5,000 groups, groups of 20,000 members).
//!
//! - Attribute values: a user's `userName`, `externalId` and `emails.value`, a group's
//!   `displayName`, `externalId` and `members.value`, each value as the filter compares it
//!   (lower-cased unless the attribute is caseExact). A filter `eq` on one of them, and `and`/`or`
//!   of such, is answered from here; [`ResourceIndex::candidates`] gives a superset that the
//!   caller still checks with [`filter::matches`], so the answer is the scan's by construction.
//! - Membership: the groups whose `members` list a user id (as [`super::is_member`] reads them),
//!   for a user's rendered `groups` and for taking a deleted user out of every group.
//! - List order: `(meta.created, id)` of every resource, so an unfiltered page is read in order
//!   without sorting the directory.
//!
//! Kept in step with every write the copy takes ([`ResourceIndex::apply`], before the data
//! changes); a write changes only the keys that differ between the old and the new value, so
//! adding one member to a group of 20,000 touches one entry.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;

use super::filter::{self, AttrPath, CompareOp, Filter};
use super::id_set::IdSet;
use super::store::{Kind, Write};
use super::{Record, ScimData};

/// An indexed attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attr {
    UserName,
    ExternalId,
    EmailValue,
    DisplayName,
    MemberValue,
}

impl Attr {
    fn of(kind: Kind) -> &'static [Attr] {
        match kind {
            Kind::User => &[Attr::UserName, Attr::ExternalId, Attr::EmailValue],
            Kind::Group => &[Attr::DisplayName, Attr::ExternalId, Attr::MemberValue],
            Kind::Tombstone => &[],
        }
    }

    /// `(name, sub)` of the attribute path, as a filter names it.
    fn path(self) -> (&'static str, Option<&'static str>) {
        match self {
            Attr::UserName => ("userName", None),
            Attr::ExternalId => ("externalId", None),
            Attr::EmailValue => ("emails", Some("value")),
            Attr::DisplayName => ("displayName", None),
            Attr::MemberValue => ("members", Some("value")),
        }
    }

    /// caseExact in RFC 7643 (what `filter::compare` compares exactly).
    fn exact(self) -> bool {
        self == Attr::ExternalId
    }

    /// The attribute a filter's path names on `kind`, if indexed. Paths with a schema URN are
    /// left to the scan (a core URN changes whether `externalId` compares exactly).
    fn named(kind: Kind, p: &AttrPath) -> Option<Attr> {
        if p.urn.is_some() {
            return None;
        }
        Attr::of(kind).iter().copied().find(|a| {
            let (name, sub) = a.path();
            p.name.eq_ignore_ascii_case(name)
                && match (sub, &p.sub) {
                    (None, None) => true,
                    (Some(s), Some(ps)) => ps.eq_ignore_ascii_case(s),
                    _ => false,
                }
        })
    }

    /// The value as looked up: as given when caseExact, lower-cased otherwise.
    pub fn key(self, value: &str) -> String {
        if self.exact() {
            value.to_owned()
        } else {
            value.to_lowercase()
        }
    }
}

/// Every key `v` is found under for `attr`: the values `filter::values_at` reaches, plus the
/// plain `get` and trimmed spellings the uniqueness checks read. More keys than needed only add
/// candidates the caller's exact check drops; a missing key would lose a match.
fn keys_of(attr: Attr, v: &Value) -> HashSet<String> {
    let (name, sub) = attr.path();
    let path = AttrPath {
        urn: None,
        name: name.to_owned(),
        sub: sub.map(str::to_owned),
    };
    let mut out: HashSet<String> = filter::values_at(v, &path)
        .into_iter()
        .filter_map(Value::as_str)
        .map(|s| attr.key(s))
        .collect();
    if sub.is_none()
        && let Some(s) = v.get(name).and_then(Value::as_str)
    {
        out.insert(attr.key(s));
        out.insert(attr.key(s.trim()));
    }
    if attr == Attr::DisplayName {
        let trimmed: Vec<String> = out.iter().map(|k| k.trim().to_owned()).collect();
        out.extend(trimmed);
    }
    out
}

/// The user ids a group lists as members, in list order, read exactly as [`super::is_member`]
/// does.
pub(super) fn member_ids(group: &Value) -> Vec<&str> {
    group
        .get("members")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|x| x.get("value").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// The list order of a resource: `meta.created`, then id.
pub fn order_key(id: &str, v: &Value) -> (String, String) {
    let created = v
        .pointer("/meta/created")
        .and_then(Value::as_str)
        .unwrap_or_default();
    (created.to_owned(), id.to_owned())
}

/// What the index reads of one record: the resource without compactly held members (cheap for
/// a big group), and those members' ids.
struct Read<'a> {
    value: Value,
    /// `Some` when these are exactly the values a filter's `members.value` reaches (members held
    /// compactly, or no `members` in any spelling); `None`: read `value` instead.
    ids: Option<Vec<&'a str>>,
}

impl<'a> Read<'a> {
    fn of(r: &'a Record) -> Self {
        let value = r.value_without_compact_members();
        let ids = match r.compact_member_ids() {
            Some(ids) => Some(ids.collect()),
            None => (!value
                .as_object()
                .is_some_and(|o| o.keys().any(|k| k.eq_ignore_ascii_case("members"))))
            .then(Vec::new),
        };
        Read { value, ids }
    }

    fn keys(&self, attr: Attr) -> HashSet<String> {
        match (&self.ids, attr) {
            (Some(ids), Attr::MemberValue) => ids.iter().map(|i| attr.key(i)).collect(),
            _ => keys_of(attr, &self.value),
        }
    }

    /// The member ids as [`super::is_member`] reads them.
    fn member_ids(&self) -> Vec<&str> {
        match &self.ids {
            Some(ids) => ids.clone(),
            None => member_ids(&self.value),
        }
    }
}

/// Ids in `after` and not `before`, and in `before` and not `after`, each once, in list order.
///
/// A PATCH appends or takes out a few members and leaves the order of the rest: the lists then
/// share a long head and tail, and only the few ids between are looked for in the rest (a scan,
/// no set of 20,000 ids). Anything else is compared as sets.
pub(super) fn id_diff<'a>(before: &[&'a str], after: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    const FEW: usize = 8;
    let head = before.iter().zip(after).take_while(|(b, a)| b == a).count();
    let (b_rest, a_rest) = (&before[head..], &after[head..]);
    let tail = b_rest
        .iter()
        .rev()
        .zip(a_rest.iter().rev())
        .take_while(|(b, a)| b == a)
        .count();
    let (b_mid, a_mid) = (
        &b_rest[..b_rest.len() - tail],
        &a_rest[..a_rest.len() - tail],
    );
    if b_mid.len() + a_mid.len() <= FEW {
        // Head and tail are in both lists: an id between is in the other list exactly when it
        // is between there too, or in the head or tail.
        let shared = || before[..head].iter().chain(&b_rest[b_rest.len() - tail..]);
        let only = |mid: &[&'a str], other: &[&'a str]| {
            let mut out: Vec<&'a str> = Vec::new();
            for x in mid {
                if !other.contains(x) && !out.contains(x) && !shared().any(|s| s == x) {
                    out.push(x);
                }
            }
            out
        };
        return (only(a_mid, b_mid), only(b_mid, a_mid));
    }
    let (b, a): (HashSet<&str>, HashSet<&str>) = (
        before.iter().copied().collect(),
        after.iter().copied().collect(),
    );
    let only = |list: &[&'a str], other: &HashSet<&str>| {
        let mut seen = HashSet::new();
        list.iter()
            .copied()
            .filter(|x| !other.contains(x) && seen.insert(*x))
            .collect()
    };
    (only(after, &b), only(before, &a))
}

/// Takes `id` out of the set under `key`, and the set out of `map` once empty.
fn unlist(map: &mut HashMap<String, IdSet<String>>, key: &str, id: &str) {
    if let Some(ids) = map.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

/// The `members.value` keys of group `id` when `added` came and `removed` went, leaving
/// `after`: a key goes only when no member left has it (`U1` and `u1` share `u1`), and comes
/// when a new member has it.
fn change_member_keys(
    map: &mut HashMap<String, IdSet<String>>,
    id: &str,
    after: &[&str],
    added: &[&str],
    removed: &[&str],
) {
    // A few removals look for their key among the members left; many build the set once.
    let left: Option<HashSet<Cow<str>>> =
        (removed.len() > 8).then(|| after.iter().map(|m| member_key(m)).collect());
    for r in removed {
        let k = member_key(r);
        let kept = match &left {
            Some(left) => left.contains(&k),
            None => after.iter().any(|m| member_key(m) == k),
        };
        if !kept {
            unlist(map, k.as_ref(), id);
        }
    }
    for a in added {
        map.entry(member_key(a).into_owned())
            .or_default()
            .insert(id.to_owned());
    }
}

/// [`Attr::key`] of a member id, without a copy when it is already lower case (a UUID).
fn member_key(id: &str) -> Cow<'_, str> {
    if id.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(Attr::MemberValue.key(id))
    }
}

#[derive(Debug, Clone, Default)]
pub struct ResourceIndex {
    by_value: HashMap<(Kind, Attr), HashMap<String, IdSet<String>>>,
    /// user id → ids of the groups listing it.
    groups_of: HashMap<String, IdSet<String>>,
    order: HashMap<Kind, BTreeSet<(String, String)>>,
}

impl ResourceIndex {
    pub fn build(data: &ScimData) -> Self {
        let mut index = ResourceIndex::default();
        for kind in Kind::ALL {
            for (id, r) in data.map(kind) {
                index.change(kind, id, None, Some(r));
            }
        }
        index
    }

    /// Takes `w` in; `data` is the copy before `w` is applied to it.
    pub fn apply(&mut self, data: &ScimData, w: &Write) {
        let new = w.value.as_ref().map(Record::new);
        self.change(w.kind, &w.id, data.map(w.kind).get(&w.id), new.as_ref());
    }

    /// Takes the change of `id` from `old` to `new`. A group's members held compactly are not
    /// decoded: the ids that came and went are found by comparing the two id lists, and only
    /// their entries change (a PATCH adding one member to a group of 20,000 touches one).
    pub fn change(&mut self, kind: Kind, id: &str, old: Option<&Record>, new: Option<&Record>) {
        let (old, new) = (old.map(Read::of), new.map(Read::of));
        // Members that came and went, found once for the member keys and the memberships.
        let members = (kind == Kind::Group).then(|| {
            let before = old.as_ref().map(Read::member_ids).unwrap_or_default();
            let after = new.as_ref().map(Read::member_ids).unwrap_or_default();
            let (added, removed) = id_diff(&before, &after);
            (after, added, removed)
        });
        let exact = |r: Option<&Read>| r.is_none_or(|r| r.ids.is_some());
        for &attr in Attr::of(kind) {
            let map = self.by_value.entry((kind, attr)).or_default();
            if attr == Attr::MemberValue
                && exact(old.as_ref())
                && exact(new.as_ref())
                && let Some((after, added, removed)) = &members
            {
                change_member_keys(map, id, after, added, removed);
                continue;
            }
            let keys = |r: Option<&Read>| r.map(|r| r.keys(attr)).unwrap_or_default();
            let (before, after) = (keys(old.as_ref()), keys(new.as_ref()));
            for k in before.difference(&after) {
                unlist(map, k, id);
            }
            for k in after.difference(&before) {
                map.entry(k.clone()).or_default().insert(id.to_owned());
            }
        }
        if let Some((_, added, removed)) = members {
            for uid in removed {
                unlist(&mut self.groups_of, uid, id);
            }
            for uid in added {
                self.groups_of
                    .entry(uid.to_owned())
                    .or_default()
                    .insert(id.to_owned());
            }
        }
        let order = self.order.entry(kind).or_default();
        let key = |r: Option<&Read>| r.map(|r| order_key(id, &r.value));
        let (before, after) = (key(old.as_ref()), key(new.as_ref()));
        if before != after {
            if let Some(k) = before {
                order.remove(&k);
            }
            if let Some(k) = after {
                order.insert(k);
            }
        }
    }

    /// Ids of `kind` carrying `key` (see [`Attr::key`]) in `attr`.
    pub fn ids(&self, kind: Kind, attr: Attr, key: &str) -> impl Iterator<Item = &String> {
        self.by_value
            .get(&(kind, attr))
            .and_then(|m| m.get(key))
            .into_iter()
            .flatten()
    }

    /// Ids of the groups listing `user_id` as a member, in id order.
    pub fn groups_of(&self, user_id: &str) -> impl Iterator<Item = &String> {
        self.groups_of.get(user_id).into_iter().flatten()
    }

    /// Ids of `kind` in list order.
    pub fn in_order(&self, kind: Kind) -> impl Iterator<Item = &String> {
        self.order
            .get(&kind)
            .into_iter()
            .flatten()
            .map(|(_, id)| id)
    }

    /// Every resource of `kind` that can match `f`, when the index can tell (`None`: scan).
    /// A superset: the caller checks each with `filter::matches`.
    pub fn candidates<'a>(
        &'a self,
        data: &'a ScimData,
        kind: Kind,
        f: &Filter,
    ) -> Option<BTreeSet<&'a String>> {
        match f {
            Filter::And(a, b) => match (
                self.candidates(data, kind, a),
                self.candidates(data, kind, b),
            ) {
                (Some(x), Some(y)) => Some(x.intersection(&y).copied().collect()),
                (Some(x), None) | (None, Some(x)) => Some(x),
                (None, None) => None,
            },
            Filter::Or(a, b) => {
                let mut x = self.candidates(data, kind, a)?;
                x.extend(self.candidates(data, kind, b)?);
                Some(x)
            }
            Filter::Compare(p, CompareOp::Eq, Value::String(want)) => {
                // Two RFC 3339 instants compare as instants, not text: left to the scan.
                if time::OffsetDateTime::parse(want, &time::format_description::well_known::Rfc3339)
                    .is_ok()
                {
                    return None;
                }
                if p.urn.is_none() && p.sub.is_none() && p.name.eq_ignore_ascii_case("id") {
                    return Some(
                        data.map(kind)
                            .get_key_value(want)
                            .map(|(k, _)| k)
                            .into_iter()
                            .collect(),
                    );
                }
                let attr = Attr::named(kind, p)?;
                Some(self.ids(kind, attr, &attr.key(want)).collect())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
