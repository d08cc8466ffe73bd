//! The leaver check by lookup. Every sign-in and launch asks whether the person was disabled or
//! deleted through SCIM; answered by scanning every user (and building each one's email list),
//! that cost grew with the directory, paid on each launch under the SCIM cache's lock. This index
//! maps the three things a person is recognised by (`externalId` as given, `userName` and each
//! email without ASCII case) to the users and tombstones that carry them, and is kept in step
//! with every change the copy takes. The subject decides before the email (issue 10): a leaver's
//! address that is also an alias on someone else's active record must not let the leaver in.
//! Its answer is [`ScimData::is_deprovisioned`]'s, which stays the reference (see the property
//! test).

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use super::id_set::IdSet;
use super::store::Kind;
#[cfg(test)]
use super::store::Write;
use super::{ScimData, user_emails};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// `externalId`, compared exactly (the IdP's subject).
    External(String),
    /// `userName`, ASCII-lowercased.
    Name(String),
    /// An email (or a `userName` that is an address), ASCII-lowercased.
    Email(String),
}

/// Users and tombstones by the keys a signing-in person can match.
#[derive(Debug, Default)]
pub struct PersonIndex {
    by_key: HashMap<Key, IdSet<(Kind, String)>>,
}

impl PersonIndex {
    pub fn build(data: &ScimData) -> Self {
        let mut index = PersonIndex::default();
        for (kind, map) in [
            (Kind::User, &data.users),
            (Kind::Tombstone, &data.tombstones),
        ] {
            for (id, r) in map {
                index.add(kind, id, &r.value());
            }
        }
        index
    }

    /// Takes `w` into `data` and into the index together (the old value's keys go first).
    #[cfg(test)]
    pub fn apply(&mut self, data: &mut ScimData, w: &Write) {
        let old = data.map(w.kind).get(&w.id).map(super::Record::value);
        self.change(w.kind, &w.id, old.as_ref(), w.value.as_ref());
        data.apply(w);
    }

    /// Takes the change of `id` from `old` to `new` (the data changes alongside).
    pub fn change(&mut self, kind: Kind, id: &str, old: Option<&Value>, new: Option<&Value>) {
        if kind == Kind::Group {
            return;
        }
        if let Some(old) = old {
            for key in keys(old) {
                if let Some(set) = self.by_key.get_mut(&key) {
                    set.remove(&(kind, id.to_owned()));
                    if set.is_empty() {
                        self.by_key.remove(&key);
                    }
                }
            }
        }
        if let Some(new) = new {
            self.add(kind, id, new);
        }
    }

    fn add(&mut self, kind: Kind, id: &str, v: &Value) {
        for key in keys(v) {
            self.by_key
                .entry(key)
                .or_default()
                .insert((kind, id.to_owned()));
        }
    }

    /// [`ScimData::is_deprovisioned`] by lookup: the records carrying the subject decide (an
    /// active one wins); only when there are none does the email decide, and there an active
    /// user vouches only when it has no `externalId` of its own.
    pub fn is_deprovisioned(&self, data: &ScimData, subject: &str, email: Option<&str>) -> bool {
        // (active, has externalId) of each record found under `keys`; a stale entry is skipped.
        let found = |keys: &[Key]| -> Vec<(bool, bool)> {
            let ids: BTreeSet<&(Kind, String)> = keys
                .iter()
                .filter_map(|k| self.by_key.get(k))
                .flatten()
                .collect();
            ids.into_iter()
                .filter_map(|(kind, id)| match kind {
                    Kind::User => data
                        .users
                        .get(id)
                        .map(|u| (u.active(), u.has_external_id())),
                    // A tombstone is never active, so whether it has an externalId is moot.
                    Kind::Tombstone => data.tombstones.get(id).map(|_| (false, true)),
                    Kind::Group => None,
                })
                .collect()
        };
        let by_subject = found(&[
            Key::External(subject.to_owned()),
            Key::Name(subject.to_ascii_lowercase()),
        ]);
        if !by_subject.is_empty() {
            return !by_subject.iter().any(|(active, _)| *active);
        }
        let Some(email) = email else {
            return false;
        };
        let by_email = found(&[Key::Email(email.to_ascii_lowercase())]);
        if by_email
            .iter()
            .any(|(active, external)| *active && !*external)
        {
            return false;
        }
        by_email.iter().any(|(active, _)| !active)
    }
}

fn keys(v: &Value) -> Vec<Key> {
    let mut out = Vec::new();
    if let Some(x) = v.get("externalId").and_then(Value::as_str) {
        out.push(Key::External(x.to_owned()));
    }
    if let Some(n) = v.get("userName").and_then(Value::as_str) {
        out.push(Key::Name(n.to_ascii_lowercase()));
    }
    out.extend(
        user_emails(v)
            .into_iter()
            .map(|e| Key::Email(e.to_ascii_lowercase())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A small vocabulary, so that writes and questions collide often.
    const NAMES: [&str; 4] = ["ann", "Ann", "bob@x.com", "BOB@X.COM"];
    /// "ann" is also a `userName`: a subject can match by `userName` as well as `externalId`.
    const SUBJECTS: [&str; 4] = ["sub-1", "SUB-1", "sub-2", "ann"];

    fn person(
        name: usize,
        subject: Option<usize>,
        email: Option<usize>,
        active: Option<bool>,
    ) -> Value {
        let mut v = json!({"userName": NAMES[name]});
        if let Some(s) = subject {
            v["externalId"] = json!(SUBJECTS[s]);
        }
        if let Some(e) = email {
            v["emails"] = json!([{"value": NAMES[e], "primary": true}]);
        }
        if let Some(a) = active {
            v["active"] = json!(a);
        }
        v
    }

    fn write() -> impl Strategy<Value = Write> {
        (
            prop_oneof![Just(Kind::User), Just(Kind::Tombstone), Just(Kind::Group)],
            0..4usize,
            proptest::option::of((
                0..4usize,
                proptest::option::of(0..4usize),
                proptest::option::of(0..4usize),
                proptest::option::of(any::<bool>()),
            )),
        )
            .prop_map(|(kind, id, value)| Write {
                kind,
                id: format!("id-{id}"),
                value: value.map(|(n, s, e, a)| person(n, s, e, a)),
            })
    }

    proptest! {
        #[test]
        fn answers_as_the_scan_does_after_any_changes(
            writes in proptest::collection::vec(write(), 0..24),
            subject in 0..4usize,
            email in proptest::option::of(0..4usize),
            rebuild in any::<bool>(),
        ) {
            let mut data = ScimData::default();
            let mut index = PersonIndex::default();
            for w in &writes {
                index.apply(&mut data, w);
            }
            if rebuild {
                index = PersonIndex::build(&data);
            }
            let email = email.map(|e| NAMES[e]);
            prop_assert_eq!(
                index.is_deprovisioned(&data, SUBJECTS[subject], email),
                data.is_deprovisioned(SUBJECTS[subject], email)
            );
        }
    }

    #[test]
    fn an_active_user_wins_over_a_tombstone_of_the_same_person() {
        let mut data = ScimData::default();
        let mut index = PersonIndex::default();
        let put = |kind, id: &str, v: Value| Write {
            kind,
            id: id.to_owned(),
            value: Some(v),
        };
        index.apply(
            &mut data,
            &put(Kind::Tombstone, "t", json!({"externalId": "s"})),
        );
        assert!(index.is_deprovisioned(&data, "s", None));
        index.apply(&mut data, &put(Kind::User, "u", json!({"externalId": "s"})));
        assert!(!index.is_deprovisioned(&data, "s", None));
        index.apply(
            &mut data,
            &put(Kind::User, "u", json!({"externalId": "s", "active": false})),
        );
        assert!(index.is_deprovisioned(&data, "s", None));
        // Renamed away: the old keys no longer find the user, the tombstone still counts.
        index.apply(
            &mut data,
            &put(Kind::User, "u", json!({"externalId": "other"})),
        );
        assert!(index.is_deprovisioned(&data, "s", None));
        assert!(!index.is_deprovisioned(&data, "other", None));
    }

    /// Issue 10: X left; X's address is also an alias on Y's active record. X is refused by
    /// subject whatever email X presents; Y, and an unknown person with the shared address, are
    /// judged without letting Y's record vouch for X.
    #[test]
    fn a_leaver_is_not_let_in_by_another_persons_active_record_sharing_an_alias() {
        let mut data = ScimData::default();
        let mut index = PersonIndex::default();
        let put = |id: &str, v: Value| Write {
            kind: Kind::User,
            id: id.to_owned(),
            value: Some(v),
        };
        index.apply(
            &mut data,
            &put(
                "x",
                json!({"userName": "x@corp.example", "externalId": "sub-x", "active": false,
                       "emails": [{"value": "x@corp.example", "primary": true}]}),
            ),
        );
        index.apply(
            &mut data,
            &put(
                "y",
                json!({"userName": "y@corp.example", "externalId": "sub-y",
                       "emails": [{"value": "y@corp.example", "primary": true},
                                  {"value": "x@corp.example"}]}),
            ),
        );
        for (subject, email, leaver) in [
            ("sub-x", Some("x@corp.example"), true),
            ("sub-x", Some("y@corp.example"), true),
            ("sub-x", None, true),
            ("sub-y", Some("y@corp.example"), false),
            ("sub-y", Some("x@corp.example"), false),
            // Nobody carries this subject: the shared address finds X (disabled) and Y (active,
            // but Y's record belongs to sub-y): refused.
            ("sub-unknown", Some("x@corp.example"), true),
            ("sub-unknown", Some("y@corp.example"), false),
        ] {
            assert_eq!(
                index.is_deprovisioned(&data, subject, email),
                leaver,
                "{subject} {email:?}"
            );
            assert_eq!(
                data.is_deprovisioned(subject, email),
                leaver,
                "scan: {subject} {email:?}"
            );
        }
    }
}
