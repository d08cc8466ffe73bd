//! One stored SCIM resource, kept compact (issue 15: every replica holds 100,000 users and 5,000
//! groups). A `serde_json::Value` object is a `BTreeMap` whose node costs about 600 bytes even
//! for four attributes: a user held that way took about 3,700 bytes, and each group member (one
//! small object) about 700. A record keeps the resource as its JSON text instead, and a group's
//! `members` as a list of ids (with the rest of each member, if any, as JSON text), and is
//! decoded when read. Decoding gives back exactly the `Value` that was stored: serde_json writes
//! every number so that it reads back the same, and objects are ordered by key.
//!
//! The text is shared (`Arc`), so a copy of the data (the reconciler's snapshot, a list holding
//! the copy while a write lands) shares the records instead of duplicating them.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

/// A resource as stored in a replica's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The resource's JSON, without `members` when those are held in `members`.
    body: Arc<str>,
    /// `members`, when it is an array of objects each with a string `value` (and no other key
    /// spelling `value` in another letter case), and the body has no other spelling of
    /// `members`: then a filter's `members.value` reads exactly these ids. `None` when the
    /// resource has no `members` or they are kept in `body`.
    members: Option<Arc<[Member]>>,
    /// What the leaver check reads of a user, so that it decodes nothing under the copy's lock.
    active: bool,
    has_external_id: bool,
}

/// One group member: its `value` (a user id) and its other attributes as a JSON object, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    value: Box<str>,
    rest: Option<Box<str>>,
}

const MEMBERS: &str = "members";

/// An object without its `members`, serialised as serde_json serialises the whole object.
struct WithoutMembers<'a>(&'a Map<String, Value>);

impl Serialize for WithoutMembers<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().filter(|(k, _)| k.as_str() != MEMBERS))
    }
}

/// Serialising a `Value` cannot fail (its keys are strings); `null` stands in should it ever.
fn text(v: &impl Serialize) -> Box<str> {
    serde_json::to_string(v)
        .unwrap_or_else(|_| "null".to_owned())
        .into_boxed_str()
}

impl Record {
    pub fn new(v: &Value) -> Record {
        let active = super::user_active(v);
        let has_external_id = v.get("externalId").is_some();
        if let Some(obj) = v.as_object()
            && !obj
                .keys()
                .any(|k| k != MEMBERS && k.eq_ignore_ascii_case(MEMBERS))
            && let Some(members) = obj.get(MEMBERS).and_then(compact_members)
        {
            return Record {
                body: Arc::from(text(&WithoutMembers(obj))),
                members: Some(members),
                active,
                has_external_id,
            };
        }
        Record {
            body: Arc::from(text(v)),
            members: None,
            active,
            has_external_id,
        }
    }

    /// [`super::user_active`] of the resource.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Whether the resource has an `externalId` (of any type).
    pub fn has_external_id(&self) -> bool {
        self.has_external_id
    }

    /// The resource as it was stored.
    pub fn value(&self) -> Value {
        let mut v = self.body_value();
        if let (Some(members), Some(obj)) = (&self.members, v.as_object_mut()) {
            obj.insert(
                MEMBERS.to_owned(),
                Value::Array(members.iter().map(Member::value).collect()),
            );
        }
        v
    }

    /// The resource without a compactly held `members` list (cheap for a big group).
    fn body_value(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The member ids, when `members` is held compactly: exactly what a filter's
    /// `members.value` reaches, in order. `None`: read [`Self::value`] instead.
    pub fn compact_member_ids(&self) -> Option<impl Iterator<Item = &str>> {
        self.members.as_ref().map(|m| m.iter().map(|x| &*x.value))
    }

    /// The resource as [`Self::value`] gives it, but without `members` when those are held
    /// compactly (with [`Self::compact_member_ids`], what the index and the audit trail read of
    /// a big group without decoding its members).
    pub fn value_without_compact_members(&self) -> Value {
        match self.members {
            Some(_) => self.body_value(),
            None => self.value(),
        }
    }

    /// One top-level attribute, decoding no more than needed (a group's members only when
    /// `name` is `members`).
    pub fn get(&self, name: &str) -> Option<Value> {
        if name == MEMBERS && self.members.is_some() {
            return self.value().get(MEMBERS).cloned();
        }
        match self.body_value() {
            Value::Object(mut o) => o.remove(name),
            _ => None,
        }
    }

    /// Whether `members` lists `user_id` (as [`super::is_member`] reads a group).
    pub fn has_member(&self, user_id: &str) -> bool {
        match &self.members {
            Some(m) => m.iter().any(|x| &*x.value == user_id),
            None => super::is_member(&self.body_value(), user_id),
        }
    }

    /// The ids `members` lists, in order (duplicates included).
    pub fn member_ids(&self) -> Vec<String> {
        match &self.members {
            Some(m) => m.iter().map(|x| x.value.to_string()).collect(),
            None => super::index::member_ids(&self.body_value())
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// `members` as a compact list, when every member is an object with a string `value`.
fn compact_members(members: &Value) -> Option<Arc<[Member]>> {
    members
        .as_array()?
        .iter()
        .map(|m| {
            let obj = m.as_object()?;
            let value = obj.get("value")?.as_str()?;
            if obj
                .keys()
                .any(|k| k != "value" && k.eq_ignore_ascii_case("value"))
            {
                return None;
            }
            let rest = (obj.len() > 1).then(|| text(&RestOf(obj)));
            Some(Member {
                value: value.into(),
                rest,
            })
        })
        .collect()
}

/// A member object without its `value`.
struct RestOf<'a>(&'a Map<String, Value>);

impl Serialize for RestOf<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().filter(|(k, _)| k.as_str() != "value"))
    }
}

impl Member {
    fn value(&self) -> Value {
        let mut obj = match self
            .rest
            .as_deref()
            .map(serde_json::from_str::<Map<String, Value>>)
        {
            Some(Ok(o)) => o,
            _ => Map::new(),
        };
        obj.insert("value".to_owned(), Value::String(self.value.to_string()));
        Value::Object(obj)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn gives_back_exactly_what_was_stored() {
        for v in [
            json!({"id": "u", "userName": "ann", "active": false, "n": 1.5e300, "m": -0.0,
                   "big": u64::MAX, "neg": i64::MIN, "emails": [{"value": "a@x", "primary": true}],
                   "meta": {"created": "2026-01-01T00:00:00Z"}, "\u{1F600}": "\u{0}\"\\"}),
            json!({"id": "g", "displayName": "G", "members": [
                {"value": "u1"}, {"value": "u2", "display": "Two", "$ref": "x"}, {"value": "u1"}]}),
            json!({"id": "g", "members": []}),
            json!({"id": "g", "members": [{"value": "u1"}, {"value": 7}]}),
            json!({"id": "g", "members": [{"value": "u1"}, "u2"]}),
            json!({"id": "g", "members": {"value": "u1"}}),
            json!([1, 2]),
            json!("x"),
        ] {
            let r = Record::new(&v);
            assert_eq!(r.value(), v);
            assert_eq!(r.active(), crate::provisioning::scim::user_active(&v));
            assert_eq!(r.has_external_id(), v.get("externalId").is_some());
            assert_eq!(
                serde_json::to_string(&r.value()).ok(),
                serde_json::to_string(&v).ok()
            );
        }
    }

    #[test]
    fn reads_members_and_attributes_as_the_value_does() {
        let v = json!({"id": "g", "displayName": "G", "members": [
            {"value": "u1"}, {"value": "u2", "display": "Two"}]});
        let r = Record::new(&v);
        assert!(r.members.is_some());
        assert!(r.has_member("u2") && !r.has_member("u3"));
        assert_eq!(r.member_ids(), ["u1", "u2"]);
        assert_eq!(r.get("displayName"), Some(json!("G")));
        assert_eq!(r.get("members"), v.get("members").cloned());
        assert_eq!(r.get("absent"), None);
        // Members kept in the body (one has no string value) read the same way.
        let odd = json!({"members": [{"value": "u1"}, {"value": 7}]});
        let r = Record::new(&odd);
        assert!(r.members.is_none());
        assert!(r.has_member("u1"));
        assert_eq!(r.member_ids(), ["u1"]);
    }

    /// Compact members are what a filter's `members.value` reads: a second spelling of `value`
    /// in a member, or of `members` in the group, would be read instead, so such a group is
    /// kept whole.
    #[test]
    fn other_spellings_of_value_or_members_keep_the_group_whole() {
        for v in [
            json!({"id": "g", "members": [{"value": "u1", "Value": "x"}]}),
            json!({"id": "g", "Members": [{"value": "x"}], "members": [{"value": "u1"}]}),
        ] {
            let r = Record::new(&v);
            assert!(r.compact_member_ids().is_none(), "{v}");
            assert_eq!(r.value_without_compact_members(), v);
            assert_eq!(r.value(), v);
        }
        let plain = Record::new(&json!({"id": "g", "displayName": "G",
            "members": [{"value": "u1"}, {"value": "u2"}]}));
        assert_eq!(
            plain.compact_member_ids().map(Iterator::collect::<Vec<_>>),
            Some(vec!["u1", "u2"])
        );
        assert_eq!(
            plain.value_without_compact_members(),
            json!({"id": "g", "displayName": "G"})
        );
    }
}
