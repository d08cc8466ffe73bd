//! The SCIM 2.0 service (RFC 7643, RFC 7644) Identity Manager pushes users and groups to and
//! Identity Governance collects them from. No HTTP here: `web::scim` unpacks requests and calls
//! [`ScimService`]; [`ScimError`] is translated to a SCIM error body there, once.
//!
//! Resources are JSON objects kept in memory and written through a [`store::ScimStore`] before
//! any change is acknowledged. With a shared store (Redis, several replicas) the in-memory copy is
//! a cache: it is brought up to date before every request and leaver check, and a change decided
//! on a copy another replica has since changed is decided again (see [`ScimService::write`]). Every write gets a new `meta.version` (a weak ETag) and is checked
//! against `If-Match` when the client sends one (RFC 7644 §3.14).

pub mod filter;
mod id_set;
pub mod index;
pub mod patch;
mod person_index;
pub mod record;
pub mod redis_store;
pub mod store;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::clock::{SharedClock, UnixTime};
use index::ResourceIndex;
pub use record::Record;
use store::{Kind, ScimStore};
use wire::{
    ENTERPRISE_SCHEMA, GROUP_SCHEMA, ListQuery, ListResponse, MAX_PAGE, PatchRequest, ScimType,
    USER_SCHEMA,
};

/// A SCIM failure, with the HTTP status and `scimType` the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {detail}")]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<ScimType>,
    pub detail: String,
}

impl ScimError {
    pub fn bad(scim_type: ScimType, detail: impl Into<String>) -> Self {
        ScimError {
            status: 400,
            scim_type: Some(scim_type),
            detail: detail.into(),
        }
    }
    pub fn not_found(kind: Kind, id: &str) -> Self {
        ScimError {
            status: 404,
            scim_type: None,
            detail: format!("{} {id} not found", kind_name(kind)),
        }
    }
    pub fn status(status: u16, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type: None,
            detail: detail.into(),
        }
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "User",
        Kind::Group => "Group",
        Kind::Tombstone => "Tombstone",
    }
}

fn endpoint(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "Users",
        Kind::Group => "Groups",
        Kind::Tombstone => "Tombstones",
    }
}

/// Everything the service holds; the reconciler reads a copy. Each resource is a compact
/// [`Record`], decoded when read (`Record::value`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScimData {
    pub users: BTreeMap<String, Record>,
    pub groups: BTreeMap<String, Record>,
    /// Deleted users (`id`, `userName`, `externalId`, `emails`): their sign-in stays refused.
    pub tombstones: BTreeMap<String, Record>,
}

impl ScimData {
    pub fn from_resources(items: impl IntoIterator<Item = (Kind, Value)>) -> Self {
        let mut d = ScimData::default();
        for (kind, v) in items {
            d.insert(kind, &v);
        }
        d
    }

    /// Takes one resource in (one without an `id` is skipped, as a load skips it).
    pub fn insert(&mut self, kind: Kind, v: &Value) {
        let Some(id) = v.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return;
        };
        self.map_mut(kind).insert(id, Record::new(v));
    }

    /// Every resource, decoded (what [`store::ScimStore::load`] answers).
    pub fn into_resources(self) -> Vec<(Kind, Value)> {
        let mut out = Vec::new();
        for (kind, map) in [
            (Kind::User, self.users),
            (Kind::Group, self.groups),
            (Kind::Tombstone, self.tombstones),
        ] {
            out.extend(map.into_values().map(|r| (kind, r.value())));
        }
        out
    }

    fn map(&self, kind: Kind) -> &BTreeMap<String, Record> {
        match kind {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
            Kind::Tombstone => &self.tombstones,
        }
    }

    fn map_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, Record> {
        match kind {
            Kind::User => &mut self.users,
            Kind::Group => &mut self.groups,
            Kind::Tombstone => &mut self.tombstones,
        }
    }

    /// Takes one stored change into this copy.
    pub fn apply(&mut self, w: &store::Write) {
        self.set(w.kind, &w.id, w.value.as_ref().map(Record::new));
    }

    /// Stores `record` as `id` (`None`: removes it).
    fn set(&mut self, kind: Kind, id: &str, record: Option<Record>) {
        let map = self.map_mut(kind);
        match record {
            Some(r) => map.insert(id.to_owned(), r),
            None => map.remove(id),
        };
    }

    /// Display names of the groups each user is a member of, for every user at once: what
    /// [`Self::group_names_of`] answers for one user, built in one pass over the groups instead
    /// of one pass per user (the reconciler asks for every user).
    pub fn group_names_by_member(&self) -> std::collections::HashMap<String, Vec<String>> {
        let mut out: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        for g in self.groups.values() {
            let Some(Value::String(name)) = g.get("displayName") else {
                continue;
            };
            let members: std::collections::HashSet<String> = g.member_ids().into_iter().collect();
            for m in members {
                out.entry(m).or_default().push(name.clone());
            }
        }
        out
    }

    /// Display names of the groups `user_id` is a member of.
    pub fn group_names_of(&self, user_id: &str) -> Vec<String> {
        self.groups
            .values()
            .filter(|g| g.has_member(user_id))
            .filter_map(|g| match g.get("displayName") {
                Some(Value::String(name)) => Some(name),
                _ => None,
            })
            .collect()
    }

    /// Whether a person signing in with this IdP subject and email was disabled or deleted through
    /// SCIM. The reference answer; [`person_index::PersonIndex`] gives the same by lookup.
    ///
    /// 1. The records carrying the subject (`externalId`, or `userName` ignoring case) decide: any
    ///    active one (a rehire) lets the person in, otherwise a disabled user or a tombstone
    ///    refuses them. Email is not consulted then: another person's active record that shares
    ///    an address (an alias) says nothing about this person.
    /// 2. No record carries the subject: the email decides. A disabled user or a tombstone with
    ///    the address refuses, unless an active user with it and no `externalId` (a rehire known
    ///    only by address) vouches. An active user with an `externalId` belongs to whoever has
    ///    that subject, which is not this person, so it does not vouch.
    pub fn is_deprovisioned(&self, subject: &str, email: Option<&str>) -> bool {
        let records = || {
            self.users
                .values()
                .map(|u| {
                    let u = u.value();
                    let active = user_active(&u);
                    (u, active)
                })
                .chain(self.tombstones.values().map(|t| (t.value(), false)))
        };
        let by_subject: Vec<bool> = records()
            .filter(|(v, _)| carries_subject(v, subject))
            .map(|(_, active)| active)
            .collect();
        if !by_subject.is_empty() {
            return !by_subject.contains(&true);
        }
        let Some(email) = email else {
            return false;
        };
        let by_email: Vec<(Value, bool)> = records()
            .filter(|(v, _)| user_emails(v).iter().any(|x| x.eq_ignore_ascii_case(email)))
            .collect();
        if by_email
            .iter()
            .any(|(v, active)| *active && v.get("externalId").is_none())
        {
            return false;
        }
        by_email.iter().any(|(_, active)| !active)
    }
}

fn is_member(group: &Value, user_id: &str) -> bool {
    group
        .get("members")
        .and_then(Value::as_array)
        .is_some_and(|m| {
            m.iter()
                .any(|x| x.get("value").and_then(Value::as_str) == Some(user_id))
        })
}

/// `active` defaults to true when absent (RFC 7643 leaves it to the service provider).
pub fn user_active(u: &Value) -> bool {
    u.get("active").and_then(Value::as_bool).unwrap_or(true)
}

/// Every email of a user (and `userName` when it is an address).
pub fn user_emails(u: &Value) -> Vec<String> {
    let mut out: Vec<String> = u
        .get("emails")
        .and_then(Value::as_array)
        .map(|a| {
            let mut v: Vec<&Value> = a.iter().collect();
            // The primary address first.
            v.sort_by_key(|e| !e.get("primary").and_then(Value::as_bool).unwrap_or(false));
            v.into_iter()
                .filter_map(|e| e.get("value").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(n) = u.get("userName").and_then(Value::as_str)
        && n.contains('@')
    {
        out.push(n.to_owned());
    }
    out
}

/// Whether a user or tombstone names this IdP subject: `externalId` exactly, or `userName`
/// ignoring case (the subject of a user provisioned without `externalId`).
fn carries_subject(v: &Value, subject: &str) -> bool {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    s("externalId") == Some(subject)
        || s("userName").is_some_and(|n| n.eq_ignore_ascii_case(subject))
}

fn rfc3339(t: UnixTime) -> String {
    crate::clock::format_rfc3339(t).unwrap_or_default()
}

fn new_version() -> String {
    format!("W/\"{}\"", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// What changed, for the audit trail: resource type, id, userName/displayName, before and after.
/// A group's `before` and `after` leave out `members`: the members that came and went are
/// `members_added` and `members_removed` (by `value`, in list order). A PATCH adding one member to
/// a group of 20,000 is then an event naming that member, not two copies of 20,000.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: Kind,
    pub id: String,
    pub name: String,
    pub action: &'static str,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub members_added: Vec<String>,
    pub members_removed: Vec<String>,
}

impl Change {
    /// The change of `id` from `before` to `after` (both `None` never happens).
    fn of(
        kind: Kind,
        id: &str,
        action: &'static str,
        before: Option<&Record>,
        after: Option<&Value>,
    ) -> Change {
        let (members_added, members_removed) = match kind {
            Kind::Group => members_changed(before, after),
            _ => Default::default(),
        };
        let before_value = before.map(Record::value_without_compact_members);
        let name = match (after, &before_value) {
            (Some(v), _) | (None, Some(v)) => ScimService::name_of(kind, v),
            (None, None) => String::new(),
        };
        Change {
            kind,
            id: id.to_owned(),
            name,
            action,
            before: before_value.map(|v| audit_view(kind, v)),
            after: after.map(|v| audit_copy(kind, v)),
            members_added,
            members_removed,
        }
    }
}

/// A resource as the audit trail keeps it: a group without `members`.
fn audit_view(kind: Kind, mut v: Value) -> Value {
    if kind == Kind::Group
        && let Some(o) = v.as_object_mut()
    {
        o.remove("members");
    }
    v
}

/// [`audit_view`] of a resource held elsewhere, without copying a group's members only to drop
/// them.
fn audit_copy(kind: Kind, v: &Value) -> Value {
    match (kind, v.as_object()) {
        (Kind::Group, Some(o)) => Value::Object(
            o.iter()
                .filter(|(k, _)| k.as_str() != "members")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// The member ids in `after` and not in `before`, and in `before` and not in `after`, each in
/// list order, once each (by `value`: a member without a string `value` is not named).
fn members_changed(before: Option<&Record>, after: Option<&Value>) -> (Vec<String>, Vec<String>) {
    let held;
    let before: Vec<&str> = match before {
        None => Vec::new(),
        Some(r) => match r.compact_member_ids() {
            Some(ids) => ids.collect(),
            None => {
                held = r.member_ids();
                held.iter().map(String::as_str).collect()
            }
        },
    };
    let after = after.map(index::member_ids).unwrap_or_default();
    let (added, removed) = index::id_diff(&before, &after);
    let owned = |ids: Vec<&str>| ids.into_iter().map(str::to_owned).collect();
    (owned(added), owned(removed))
}

/// A replica's copy of the SCIM data and the store revision it reflects (shared stores only).
struct Cache {
    /// Shared with list requests, which filter and render outside the lock; a change while one
    /// holds it copies the data first (`Arc::make_mut`).
    data: Arc<ScimData>,
    /// Filters, memberships and list order over `data` (shared with lists the same way).
    index: Arc<ResourceIndex>,
    seen: Option<store::Revision>,
    /// The leaver check's lookup over `data`, changed only together with it.
    people: person_index::PersonIndex,
}

impl Cache {
    fn new(data: ScimData, seen: Option<store::Revision>) -> Self {
        let people = person_index::PersonIndex::build(&data);
        let index = ResourceIndex::build(&data);
        Cache {
            data: Arc::new(data),
            index: Arc::new(index),
            seen,
            people,
        }
    }

    fn apply(&mut self, w: &store::Write) {
        // The indexes read the record being replaced, so they go first. A group is not decoded
        // (the leaver check's index reads users and tombstones only; `ResourceIndex` compares
        // member id lists).
        let new = w.value.as_ref().map(Record::new);
        let old = self.data.map(w.kind).get(&w.id);
        Arc::make_mut(&mut self.index).change(w.kind, &w.id, old, new.as_ref());
        if w.kind != Kind::Group {
            let old = old.map(Record::value);
            self.people
                .change(w.kind, &w.id, old.as_ref(), w.value.as_ref());
        }
        Arc::make_mut(&mut self.data).set(w.kind, &w.id, new);
    }

    /// Takes a refresh that was read, without the lock, from revision `from`. Other refreshes or
    /// writes may have moved the copy on meanwhile; the answer is taken only if it is newer than
    /// what the copy holds now. `false`: the order cannot be told (the epoch changed), so the
    /// caller refreshes again under the lock.
    fn take(&mut self, from: Option<&store::Revision>, refresh: store::Refresh) -> bool {
        let newer = |at: &store::Revision, now: Option<&store::Revision>| match now {
            None => true,
            Some(now) if now.epoch == at.epoch => at.number > now.number,
            Some(_) => false,
        };
        let unmoved = self.seen.as_ref() == from;
        match refresh {
            // Current as of the read: the copy, as it is now, is at least that new.
            store::Refresh::Current => true,
            store::Refresh::Changed { at, writes } => {
                // The latest value of everything changed since `from`, which is no later than
                // the copy's revision: applying all of it gives the state at `at`.
                if unmoved || newer(&at, self.seen.as_ref()) {
                    for w in &writes {
                        self.apply(w);
                    }
                    self.seen = Some(at);
                    true
                } else {
                    self.seen.as_ref().is_some_and(|now| now.epoch == at.epoch)
                }
            }
            store::Refresh::Full { at, items } => {
                self.take_all(from, at, || ScimData::from_resources(items))
            }
            store::Refresh::Loaded { at, data } => self.take_all(from, at, || data),
        }
    }

    /// [`Self::take`] of a whole copy read at `at`.
    fn take_all(
        &mut self,
        from: Option<&store::Revision>,
        at: store::Revision,
        data: impl FnOnce() -> ScimData,
    ) -> bool {
        let newer = match self.seen.as_ref() {
            None => true,
            Some(now) if now.epoch == at.epoch => at.number > now.number,
            Some(_) => false,
        };
        if self.seen.as_ref() == from || newer {
            *self = Cache::new(data(), Some(at));
            true
        } else {
            self.seen.as_ref().is_some_and(|now| now.epoch == at.epoch)
        }
    }
}

/// How often a change is decided again when another replica keeps committing first.
const COMMIT_ATTEMPTS: usize = 16;

pub struct ScimService {
    cache: Mutex<Cache>,
    /// One change at a time is decided and stored; the cache lock is not held while it is
    /// stored, so leaver checks do not queue behind a write storm's store round trips.
    writer: Mutex<()>,
    store: Arc<dyn ScimStore>,
    clock: SharedClock,
    /// Tests park the next list here, after it let go of the lock and before it filters.
    #[cfg(test)]
    list_gate: parking_lot::Mutex<Option<ListGate>>,
}

/// Where a parked list says it arrived, and waits to be let go.
#[cfg(test)]
struct ListGate {
    arrived: std::sync::mpsc::Sender<()>,
    go: std::sync::mpsc::Receiver<()>,
}

/// The store could not be read or written: SCIM answers 503, the leaver check fails closed.
fn unavailable(e: store::StoreError) -> ScimError {
    tracing::error!(error = %e, "SCIM store failed");
    ScimError::status(
        503,
        "the SCIM data store cannot be reached; nothing was changed, retry later",
    )
}

impl ScimService {
    /// Loads every stored resource. A shared store is not contacted here (it may be down while
    /// the gateway starts): the first request loads it.
    pub async fn open(
        store: Arc<dyn ScimStore>,
        clock: SharedClock,
    ) -> Result<Self, store::StoreError> {
        let data = if store.shared() {
            ScimData::default()
        } else {
            ScimData::from_resources(store.load().await?)
        };
        Ok(ScimService {
            cache: Mutex::new(Cache::new(data, None)),
            writer: Mutex::new(()),
            store,
            clock,
            #[cfg(test)]
            list_gate: parking_lot::Mutex::new(None),
        })
    }

    /// Brings the copy up to date with what other replicas wrote (a no-op for local stores).
    async fn sync(&self, c: &mut Cache) -> Result<(), ScimError> {
        match self
            .store
            .refresh(c.seen.as_ref())
            .await
            .map_err(unavailable)?
        {
            store::Refresh::Current => {}
            store::Refresh::Changed { at, writes } => {
                for w in &writes {
                    c.apply(w);
                }
                c.seen = Some(at);
            }
            store::Refresh::Full { at, items } => {
                *c = Cache::new(ScimData::from_resources(items), Some(at));
            }
            store::Refresh::Loaded { at, data } => *c = Cache::new(data, Some(at)),
        }
        Ok(())
    }

    /// The current data, locked; every read goes through here. With a shared store the round
    /// trip that brings the copy up to date is made without the lock, so that the leaver checks
    /// of concurrent sign-ins and launches overlap instead of queueing one round trip each; each
    /// reader's own refresh starts after it arrived, so it sees every change made before then.
    async fn current(&self) -> Result<tokio::sync::MutexGuard<'_, Cache>, ScimError> {
        if !self.store.shared() {
            return Ok(self.cache.lock().await);
        }
        let from = self.cache.lock().await.seen.clone();
        let refresh = self
            .store
            .refresh(from.as_ref())
            .await
            .map_err(unavailable)?;
        let mut c = self.cache.lock().await;
        if !c.take(from.as_ref(), refresh) {
            self.sync(&mut c).await?;
        }
        Ok(c)
    }

    /// A copy for the reconciler, current as of now (copied after the lock is released).
    pub async fn snapshot(&self) -> Result<ScimData, ScimError> {
        let data = Arc::clone(&self.current().await?.data);
        Ok(ScimData::clone(&data))
    }

    /// The leaver check. An error means "cannot tell": callers refuse (fail closed).
    pub async fn is_deprovisioned(
        &self,
        subject: &str,
        email: Option<&str>,
    ) -> Result<bool, ScimError> {
        let c = self.current().await?;
        Ok(c.people.is_deprovisioned(&c.data, subject, email))
    }

    /// Decides a change on a current copy and stores it. When another replica committed in
    /// between, the store refuses (`Stale`) and the change is decided again on a fresh copy: the
    /// uniqueness and If-Match checks in `plan` always saw the data the change lands on.
    ///
    /// Changes are decided one at a time (`writer`); the copy's lock is held to decide and to
    /// take the stored change in, not across the store's round trip, so the leaver checks of
    /// sign-ins do not wait for a write storm's disk syncs or Redis calls. A reader refreshing
    /// meanwhile (shared store) may move the copy on; the change is then taken in by a refresh,
    /// which brings everything up to a revision no older than the change's.
    async fn write(
        &self,
        plan: impl Fn(&ScimData, &ResourceIndex) -> Result<(Vec<store::Write>, Change), ScimError>,
        base: &str,
    ) -> Result<(Value, Change), ScimError> {
        let _one_at_a_time = self.writer.lock().await;
        for _ in 0..COMMIT_ATTEMPTS {
            let (seen, planned) = {
                let c = self.current().await?;
                (c.seen.clone(), plan(&c.data, &c.index))
            };
            let (writes, change) = planned?;
            match self
                .store
                .commit(seen.as_ref(), &writes)
                .await
                .map_err(unavailable)?
            {
                store::Commit::Stale => continue,
                store::Commit::Done(at) => {
                    let groups = {
                        let mut c = self.cache.lock().await;
                        if c.seen == seen {
                            for w in &writes {
                                c.apply(w);
                            }
                            if at.is_some() {
                                c.seen = at;
                            }
                        } else {
                            self.sync(&mut c).await?;
                        }
                        Self::groups_of(&c.data, &c.index, change.kind, &change.id)
                    };
                    // Rendered after the lock is released (a group's copy can be large), from
                    // the value written (the change keeps only what the audit trail needs).
                    let written = writes
                        .into_iter()
                        .find(|w| w.kind == change.kind && w.id == change.id)
                        .and_then(|w| w.value);
                    let shown = match written {
                        Some(v) => Self::render_taken(change.kind, v, groups, base),
                        None => Value::Null,
                    };
                    return Ok((shown, change));
                }
            }
        }
        Err(ScimError::status(
            503,
            "other replicas kept changing the SCIM data; nothing was changed, retry",
        ))
    }

    /// What rendering a resource reads besides it: `(id, displayName)` of each group a user is
    /// a member of (found by the index, confirmed as `is_member` reads it), in id order.
    fn groups_of(data: &ScimData, index: &ResourceIndex, kind: Kind, id: &str) -> Groups {
        if kind != Kind::User {
            return Vec::new();
        }
        index
            .groups_of(id)
            .filter_map(|gid| data.groups.get_key_value(gid))
            .filter(|(_, g)| g.has_member(id))
            .map(|(gid, g)| (gid.clone(), g.get("displayName").unwrap_or(Value::Null)))
            .collect()
    }

    /// The resource as the client sees it (`meta.location`, and a user's `groups`), from what
    /// was taken out of the copy (no lock needed).
    fn render_taken(kind: Kind, mut v: Value, groups: Vec<(String, Value)>, base: &str) -> Value {
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(meta) = v.get_mut("meta").and_then(Value::as_object_mut) {
            meta.insert(
                "location".into(),
                json!(format!("{base}/{}/{id}", endpoint(kind))),
            );
        }
        if !groups.is_empty()
            && let Some(o) = v.as_object_mut()
        {
            let groups = groups
                .into_iter()
                .map(|(gid, display)| {
                    json!({
                        "value": gid,
                        "$ref": format!("{base}/Groups/{gid}"),
                        "display": display,
                    })
                })
                .collect();
            o.insert("groups".into(), Value::Array(groups));
        }
        v
    }

    /// Validates and normalises a client's representation (drops read-only and null attributes,
    /// sets `schemas`, coerces `active`).
    fn prepare(
        data: &ScimData,
        index: &ResourceIndex,
        kind: Kind,
        body: Value,
        own_id: Option<&str>,
    ) -> Result<Map<String, Value>, ScimError> {
        let Value::Object(mut obj) = body else {
            return Err(ScimError::bad(
                ScimType::InvalidSyntax,
                "the body must be a JSON object",
            ));
        };
        obj.retain(|k, v| {
            !v.is_null()
                && !k.eq_ignore_ascii_case("id")
                && !k.eq_ignore_ascii_case("meta")
                && !k.eq_ignore_ascii_case("schemas")
                && (kind != Kind::User || !k.eq_ignore_ascii_case("groups"))
        });
        // Attribute names are case-insensitive (RFC 7643 §2.1): `USERNAME` and `UserName` are one
        // attribute given twice. Keeping both stores a name the uniqueness check does not read
        // but a filter on it matches (fuzz target scim_resource).
        let mut seen = std::collections::HashSet::new();
        if let Some(k) = obj.keys().find(|k| !seen.insert(k.to_ascii_lowercase())) {
            return Err(ScimError::bad(
                ScimType::InvalidSyntax,
                format!("the attribute {k:?} is given twice (names are case-insensitive)"),
            ));
        }
        // Canonical spelling of the attributes this service interprets.
        let canon: &[&str] = match kind {
            Kind::User => &[
                "userName",
                "externalId",
                "active",
                "emails",
                "name",
                "displayName",
                ENTERPRISE_SCHEMA,
            ],
            _ => &["displayName", "externalId", "members"],
        };
        for c in canon {
            if let Some(k) = obj
                .keys()
                .find(|k| k.eq_ignore_ascii_case(c) && k.as_str() != *c)
                .cloned()
                && let Some(v) = obj.remove(&k)
            {
                obj.insert((*c).to_owned(), v);
            }
        }
        let mut schemas = vec![json!(if kind == Kind::User {
            USER_SCHEMA
        } else {
            GROUP_SCHEMA
        })];
        match kind {
            Kind::User => {
                let user_name = obj
                    .get("userName")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .unwrap_or_default();
                if user_name.is_empty() {
                    return Err(ScimError::bad(
                        ScimType::InvalidValue,
                        "userName is required",
                    ));
                }
                let key = index::Attr::UserName.key(user_name);
                let clash = index
                    .ids(Kind::User, index::Attr::UserName, &key)
                    .any(|id| {
                        Some(id.as_str()) != own_id
                            && data
                                .users
                                .get(id)
                                .and_then(|u| u.get("userName"))
                                // Trimmed as `user_name` is: a stored " ann " holds "ann".
                                .is_some_and(|n| {
                                    n.as_str()
                                        .is_some_and(|n| n.trim().eq_ignore_ascii_case(user_name))
                                })
                    });
                if clash {
                    return Err(ScimError {
                        status: 409,
                        scim_type: Some(ScimType::Uniqueness),
                        detail: format!("userName \"{user_name}\" is already taken"),
                    });
                }
                match obj.get("active") {
                    None | Some(Value::Bool(_)) => {}
                    // Some clients send "True"/"False" as strings.
                    Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => {
                        obj.insert("active".into(), Value::Bool(true));
                    }
                    Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => {
                        obj.insert("active".into(), Value::Bool(false));
                    }
                    Some(_) => {
                        return Err(ScimError::bad(
                            ScimType::InvalidValue,
                            "active must be a boolean",
                        ));
                    }
                }
                if let Some(e) = obj.get("emails")
                    && !e.is_array()
                {
                    return Err(ScimError::bad(
                        ScimType::InvalidValue,
                        "emails must be an array",
                    ));
                }
                if obj.get(ENTERPRISE_SCHEMA).is_some_and(|e| !e.is_object()) {
                    return Err(ScimError::bad(
                        ScimType::InvalidValue,
                        "the enterprise extension must be an object",
                    ));
                }
                if obj.contains_key(ENTERPRISE_SCHEMA) {
                    schemas.push(json!(ENTERPRISE_SCHEMA));
                }
            }
            _ => {
                let name = obj
                    .get("displayName")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .unwrap_or_default();
                if name.is_empty() {
                    return Err(ScimError::bad(
                        ScimType::InvalidValue,
                        "displayName is required",
                    ));
                }
                // Policy rules and the reconciler know groups by name: two groups with one name
                // would be one group to them.
                let key = index::Attr::DisplayName.key(name);
                let clash = index
                    .ids(Kind::Group, index::Attr::DisplayName, &key)
                    .any(|id| {
                        Some(id.as_str()) != own_id
                            && data
                                .groups
                                .get(id)
                                .and_then(|g| g.get("displayName"))
                                .is_some_and(|n| {
                                    n.as_str()
                                        .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
                                })
                    });
                if clash {
                    return Err(ScimError {
                        status: 409,
                        scim_type: Some(ScimType::Uniqueness),
                        detail: format!("a group named \"{name}\" already exists"),
                    });
                }
                if let Some(m) = obj.get_mut("members") {
                    let Value::Array(items) = m else {
                        return Err(ScimError::bad(
                            ScimType::InvalidValue,
                            "members must be an array",
                        ));
                    };
                    for it in items.iter() {
                        if it.get("value").and_then(Value::as_str).is_none() {
                            return Err(ScimError::bad(
                                ScimType::InvalidValue,
                                "every member needs a value",
                            ));
                        }
                    }
                    // A member listed twice is kept once (decided over borrowed ids: a big
                    // group's are not copied).
                    let first: Vec<bool> = {
                        let mut seen = std::collections::HashSet::with_capacity(items.len());
                        items
                            .iter()
                            .map(|it| seen.insert(it.get("value").and_then(Value::as_str)))
                            .collect()
                    };
                    let mut first = first.into_iter();
                    items.retain(|_| first.next().unwrap_or(true));
                    if items.is_empty() {
                        obj.remove("members");
                    }
                }
            }
        }
        obj.insert("schemas".into(), Value::Array(schemas));
        Ok(obj)
    }

    fn check_version(stored: &Value, if_match: Option<&str>) -> Result<(), ScimError> {
        let Some(want) = if_match.map(str::trim) else {
            return Ok(());
        };
        if want == "*" {
            return Ok(());
        }
        let have = stored
            .pointer("/meta/version")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // Weak comparison (RFC 9110 §8.8.3.2): W/ prefixes do not count.
        let strip = |s: &str| s.trim().trim_start_matches("W/").to_owned();
        if want.split(',').any(|w| strip(w) == strip(have)) {
            Ok(())
        } else {
            Err(ScimError::status(
                412,
                "the resource changed since the version in If-Match",
            ))
        }
    }

    fn name_of(kind: Kind, v: &Value) -> String {
        let k = if kind == Kind::User {
            "userName"
        } else {
            "displayName"
        };
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    /// A new `meta` for `kind`: `created` kept from `before` (now for a new resource).
    fn meta(&self, kind: Kind, before: Option<&Value>) -> Value {
        let now = rfc3339(self.clock.now());
        let created = before
            .and_then(|b| b.pointer("/meta/created").cloned())
            .unwrap_or_else(|| json!(now));
        json!({ "resourceType": kind_name(kind), "created": created, "lastModified": now, "version": new_version() })
    }

    pub async fn create(
        &self,
        kind: Kind,
        body: Value,
        base: &str,
    ) -> Result<(Value, Change), ScimError> {
        self.write(
            |data, index| {
                let mut obj = Self::prepare(data, index, kind, body.clone(), None)?;
                let id = uuid::Uuid::new_v4().to_string();
                obj.insert("id".into(), json!(id));
                obj.insert("meta".into(), self.meta(kind, None));
                let v = Value::Object(obj);
                let change = Change::of(kind, &id, "create", None, Some(&v));
                Ok((
                    vec![store::Write {
                        kind,
                        id,
                        value: Some(v),
                    }],
                    change,
                ))
            },
            base,
        )
        .await
    }

    pub async fn get(&self, kind: Kind, id: &str, base: &str) -> Result<Value, ScimError> {
        // The record is shared out of the lock and decoded after (a group of 20,000 members is
        // about 1.5 MB of JSON).
        let (record, groups) = {
            let c = self.current().await?;
            let r = c
                .data
                .map(kind)
                .get(id)
                .cloned()
                .ok_or_else(|| ScimError::not_found(kind, id))?;
            (r, Self::groups_of(&c.data, &c.index, kind, id))
        };
        Ok(Self::render_taken(kind, record.value(), groups, base))
    }

    /// The stored resource `id`, provided `If-Match` (when sent) names its version.
    fn existing<'a>(
        data: &'a ScimData,
        kind: Kind,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<&'a Record, ScimError> {
        let before = data
            .map(kind)
            .get(id)
            .ok_or_else(|| ScimError::not_found(kind, id))?;
        // The version is in `meta`, read without a big group's members.
        Self::check_version(&before.value_without_compact_members(), if_match)?;
        Ok(before)
    }

    /// `obj` as the new state of `id`, keeping `created`.
    fn updated(
        &self,
        kind: Kind,
        id: &str,
        before: &Record,
        mut obj: Map<String, Value>,
        action: &'static str,
    ) -> (Vec<store::Write>, Change) {
        obj.insert("id".into(), json!(id));
        obj.insert(
            "meta".into(),
            self.meta(kind, Some(&before.value_without_compact_members())),
        );
        let v = Value::Object(obj);
        let change = Change::of(kind, id, action, Some(before), Some(&v));
        let write = store::Write {
            kind,
            id: id.to_owned(),
            value: Some(v),
        };
        (vec![write], change)
    }

    pub async fn replace(
        &self,
        kind: Kind,
        id: &str,
        body: Value,
        if_match: Option<&str>,
        base: &str,
    ) -> Result<(Value, Change), ScimError> {
        self.write(
            |data, index| {
                let before = Self::existing(data, kind, id, if_match)?;
                let obj = Self::prepare(data, index, kind, body.clone(), Some(id))?;
                Ok(self.updated(kind, id, before, obj, "replace"))
            },
            base,
        )
        .await
    }

    pub async fn patch(
        &self,
        kind: Kind,
        id: &str,
        req: PatchRequest,
        if_match: Option<&str>,
        base: &str,
    ) -> Result<(Value, Change), ScimError> {
        if !req.schemas.is_empty() && !req.schemas.iter().any(|s| s == wire::PATCH_SCHEMA) {
            return Err(ScimError::bad(
                ScimType::InvalidSyntax,
                "schemas must name the PatchOp message",
            ));
        }
        self.write(
            |data, index| {
                let before = Self::existing(data, kind, id, if_match)?;
                let mut work = before.value();
                let readonly: &[&str] = if kind == Kind::User { &["groups"] } else { &[] };
                for op in &req.operations {
                    patch::apply(&mut work, op, readonly)?;
                }
                let obj = Self::prepare(data, index, kind, work, Some(id))?;
                Ok(self.updated(kind, id, before, obj, "patch"))
            },
            base,
        )
        .await
    }

    pub async fn delete(
        &self,
        kind: Kind,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<Change, ScimError> {
        let (_, change) = self
            .write(
                |data, index| self.plan_delete(data, index, kind, id, if_match),
                "",
            )
            .await?;
        Ok(change)
    }

    /// Deleting a user also leaves a tombstone and takes them out of every group, in one change.
    fn plan_delete(
        &self,
        data: &ScimData,
        index: &ResourceIndex,
        kind: Kind,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(Vec<store::Write>, Change), ScimError> {
        let before = Self::existing(data, kind, id, if_match)?;
        let mut writes = Vec::new();
        if kind == Kind::User {
            // Keep what refuses the leaver's sign-in and finds their customers.
            let mut t = Map::new();
            for k in ["id", "userName", "externalId", "emails", "name"] {
                if let Some(v) = before.get(k) {
                    t.insert(k.into(), v);
                }
            }
            t.insert("deleted".into(), json!(rfc3339(self.clock.now())));
            writes.push(store::Write {
                kind: Kind::Tombstone,
                id: id.to_owned(),
                value: Some(Value::Object(t)),
            });
            // RFC 7644 §3.6: the user disappears from every group.
            let groups = index
                .groups_of(id)
                .filter_map(|gid| data.groups.get_key_value(gid))
                .filter(|(_, g)| g.has_member(id));
            for (gid, g) in groups {
                let mut g = g.value();
                let emptied = match g.get_mut("members").and_then(Value::as_array_mut) {
                    Some(m) => {
                        m.retain(|x| x.get("value").and_then(Value::as_str) != Some(id));
                        m.is_empty()
                    }
                    None => false,
                };
                if let Some(o) = g.as_object_mut() {
                    if emptied {
                        o.remove("members");
                    }
                    if let Some(meta) = o.get_mut("meta").and_then(Value::as_object_mut) {
                        meta.insert("version".into(), json!(new_version()));
                        meta.insert("lastModified".into(), json!(rfc3339(self.clock.now())));
                    }
                }
                writes.push(store::Write {
                    kind: Kind::Group,
                    id: gid.clone(),
                    value: Some(g),
                });
            }
        }
        writes.push(store::Write {
            kind,
            id: id.to_owned(),
            value: None,
        });
        Ok((writes, Change::of(kind, id, "delete", Some(before), None)))
    }
    pub async fn list(
        &self,
        kind: Kind,
        q: &ListQuery,
        base: &str,
    ) -> Result<ListResponse, ScimError> {
        let f = match q.filter.as_deref().map(str::trim) {
            Some(raw) if !raw.is_empty() => Some(
                filter::parse(raw)
                    .map_err(|e| ScimError::bad(ScimType::InvalidFilter, e.to_string()))?,
            ),
            _ => None,
        };
        // RFC 7644 §3.4.2.4: startIndex < 1 is 1; count < 0 is 0.
        let start = q.start_index.unwrap_or(1).max(1) as usize;
        let count = q.count.unwrap_or(100).clamp(0, MAX_PAGE as i64) as usize;
        let (attributes, excluded) = (q.attributes.clone(), q.excluded_attributes.clone());
        // Every sign-in's leaver check waits on this lock. A list the index answers (no filter,
        // or `eq` on an indexed attribute) costs about its page (or its candidates) here: their
        // records are shared out, decoded, checked and rendered after the lock is released.
        let taken = {
            let c = self.current().await?;
            match Self::take(&c.data, &c.index, kind, f.as_ref(), start, count) {
                Some(taken) => Ok(taken),
                None => Err((Arc::clone(&c.data), Arc::clone(&c.index))),
            }
        };
        let render_page = move |total: usize, page: Vec<(Value, Groups)>, base: &str| {
            let page = page
                .into_iter()
                .map(|(v, groups)| {
                    project(
                        Self::render_taken(kind, v, groups, base),
                        attributes.as_deref(),
                        excluded.as_deref(),
                    )
                })
                .collect();
            ListResponse::new(total, start, page)
        };
        let (data, index) = match taken {
            Ok(taken) => {
                let (total, page) = Self::finish(kind, f.as_ref(), start, count, base, taken);
                return Ok(render_page(total, page, base));
            }
            Err(shared) => shared,
        };
        // Any other filter reads every resource: that is CPU work, done after the lock is
        // released, on a blocking thread.
        let base = base.to_owned();
        #[cfg(test)]
        let gate = self.list_gate.lock().take();
        tokio::task::spawn_blocking(move || {
            #[cfg(test)]
            if let Some(g) = gate {
                let _ = g.arrived.send(());
                let _ = g.go.recv();
            }
            let (total, page) = Self::scan(&data, &index, kind, f.as_ref(), start, count, &base);
            render_page(total, page, &base)
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "SCIM list task failed");
            ScimError::status(500, "the list could not be computed; retry")
        })
    }

    /// One page of a list, decoded, with each user's groups, and the number of matches: what
    /// [`Self::list`] computes, in one call (the index's answer when it has one, else the scan).
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    fn select(
        data: &ScimData,
        index: &ResourceIndex,
        kind: Kind,
        f: Option<&filter::Filter>,
        start: usize,
        count: usize,
        base: &str,
    ) -> (usize, Vec<(Value, Groups)>) {
        match Self::take(data, index, kind, f, start, count) {
            Some(taken) => Self::finish(kind, f, start, count, base, taken),
            None => Self::scan(data, index, kind, f, start, count, base),
        }
    }

    /// What a list the index answers needs from the copy (taken under the lock; records are
    /// shared, not decoded): the page itself when there is no filter, else the index's
    /// candidates. `None`: the index cannot narrow the filter, the copy is scanned.
    fn take(
        data: &ScimData,
        index: &ResourceIndex,
        kind: Kind,
        f: Option<&filter::Filter>,
        start: usize,
        count: usize,
    ) -> Option<Taken> {
        let map = data.map(kind);
        let with_groups = |(id, r): (&String, &Record)| {
            (
                id.clone(),
                r.clone(),
                Self::groups_of(data, index, kind, id),
            )
        };
        match f {
            None => Some(Taken::Page(
                map.len(),
                index
                    .in_order(kind)
                    .skip(start - 1)
                    .take(count)
                    .filter_map(|id| map.get_key_value(id))
                    .map(with_groups)
                    .collect(),
            )),
            Some(f) => Some(Taken::Candidates(
                index
                    .candidates(data, kind, f)?
                    .into_iter()
                    .filter_map(|id| map.get_key_value(id))
                    .map(with_groups)
                    .collect(),
            )),
        }
    }

    /// [`Self::take`]'s answer as a page and the number of matches: the candidates decoded,
    /// checked with the filter (on the rendered resource when the filter reads what rendering
    /// adds) and put in list order. No lock needed.
    fn finish(
        kind: Kind,
        f: Option<&filter::Filter>,
        start: usize,
        count: usize,
        base: &str,
        taken: Taken,
    ) -> (usize, Vec<(Value, Groups)>) {
        match taken {
            Taken::Page(total, page) => (
                total,
                page.into_iter()
                    .map(|(_, r, groups)| (r.value(), groups))
                    .collect(),
            ),
            Taken::Candidates(candidates) => {
                let mut hits: Vec<(String, Value, Groups)> = candidates
                    .into_iter()
                    .map(|(id, r, groups)| (id, r.value(), groups))
                    .filter(|(_, v, groups)| f.is_none_or(|f| Self::hit(kind, f, v, groups, base)))
                    .collect();
                hits.sort_by_cached_key(|(id, v, _)| index::order_key(id, v));
                let total = hits.len();
                let page = hits
                    .into_iter()
                    .skip(start - 1)
                    .take(count)
                    .map(|(_, v, groups)| (v, groups))
                    .collect();
                (total, page)
            }
        }
    }

    /// A list the index cannot narrow: every resource in list order, decoded and checked with
    /// the filter; only matches are counted, only the page is kept.
    #[allow(clippy::too_many_arguments)]
    fn scan(
        data: &ScimData,
        index: &ResourceIndex,
        kind: Kind,
        f: Option<&filter::Filter>,
        start: usize,
        count: usize,
        base: &str,
    ) -> (usize, Vec<(Value, Groups)>) {
        let map = data.map(kind);
        let mut total = 0;
        let mut page = Vec::new();
        for (id, r) in index.in_order(kind).filter_map(|id| map.get_key_value(id)) {
            let v = r.value();
            // A user's groups are read only when the filter or the page needs them: a group of
            // 20,000 members costs a pass over it per user asked.
            let matched = match f {
                None => true,
                Some(f) if filter::reads_rendered(f, kind == Kind::User) => {
                    let groups = Self::groups_of(data, index, kind, id);
                    filter::matches(f, &Self::render_taken(kind, v.clone(), groups, base))
                }
                Some(f) => filter::matches(f, &v),
            };
            if !matched {
                continue;
            }
            total += 1;
            if total >= start && page.len() < count {
                page.push((v, Self::groups_of(data, index, kind, id)));
            }
        }
        (total, page)
    }

    /// Whether `v` (with the groups rendering adds) matches `f`.
    fn hit(kind: Kind, f: &filter::Filter, v: &Value, groups: &Groups, base: &str) -> bool {
        if filter::reads_rendered(f, kind == Kind::User) {
            filter::matches(
                f,
                &Self::render_taken(kind, v.clone(), groups.clone(), base),
            )
        } else {
            filter::matches(f, v)
        }
    }
}

/// `(id, displayName)` of each group a user is a member of, as rendering shows them.
type Groups = Vec<(String, Value)>;

/// What a list took from the copy under the lock (see [`ScimService::take`]).
enum Taken {
    /// The number of resources and the page's records (no filter).
    Page(usize, Vec<(String, Record, Groups)>),
    /// The records the index found for the filter: a superset of the matches.
    Candidates(Vec<(String, Record, Groups)>),
}

/// `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5) on top-level attributes; `id`,
/// `schemas` and `meta` are always returned.
pub fn project(v: Value, attributes: Option<&str>, excluded: Option<&str>) -> Value {
    let names = |s: Option<&str>| -> Vec<String> {
        s.map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| {
                    let lower = x.to_ascii_lowercase();
                    if lower.starts_with(&ENTERPRISE_SCHEMA.to_ascii_lowercase()) {
                        return ENTERPRISE_SCHEMA.to_owned();
                    }
                    let rest = [USER_SCHEMA, GROUP_SCHEMA]
                        .iter()
                        .find(|s| lower.starts_with(&format!("{}:", s.to_ascii_lowercase())))
                        .map(|s| &x[s.len() + 1..])
                        .unwrap_or(x);
                    rest.split('.').next().unwrap_or(rest).to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
    };
    let keep = names(attributes);
    let drop = names(excluded);
    let Value::Object(mut o) = v else { return v };
    let always = |k: &str| {
        ["id", "schemas", "meta"]
            .iter()
            .any(|a| a.eq_ignore_ascii_case(k))
    };
    if !keep.is_empty() {
        o.retain(|k, _| always(k) || keep.iter().any(|n| n.eq_ignore_ascii_case(k)));
    }
    if !drop.is_empty() {
        o.retain(|k, _| always(k) || !drop.iter().any(|n| n.eq_ignore_ascii_case(k)));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests;
