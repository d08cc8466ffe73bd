//! The access review (issue 13): who has which store, granted by what, until when, and whether
//! they used it; plus the access nobody can account for.
//!
//! One row per person × store × entitlement, with an `id` that stays the same from one report to
//! the next while the entitlement does (an Identity Governance review campaign matches rows by
//! it). Three kinds of row:
//! - `grant`: an active SCIM user the policy grants a store (rule, template, role, customer
//!   group, expiry), with the last allowed launch from the trail; `dormant` when not launched
//!   within the dormant window (or never), `expiring` when the grant ends within the expiring one;
//! - `no_scim_record`: someone the trail shows launching a store whose subject no SCIM user (or
//!   tombstone) carries: access granted from IdP groups alone, that provisioning does not know;
//! - `orphan_customer`: a BigCommerce customer bound (`storegate_subject`) to a subject no active
//!   SCIM user carries: a leaver's account left behind, or one bound outside provisioning.
//!
//! [`build`] is pure (the sources are read by [`sources`]); [`to_csv`] and [`to_json`] render.

pub mod sources;

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::bigcommerce::api::Customer;
use crate::clock::UnixTime;
use crate::clock::rfc3339;
use crate::config::Config;
use crate::policy::CustomerGroupRef;
use crate::provisioning::reconcile::identity_with_groups;
use crate::provisioning::scim::{ScimData, user_active};

/// The windows of `--dormant` and `--expiring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// A grant not launched for this long is dormant. Default 30 days.
    pub dormant_secs: i64,
    /// A grant ending within this long is expiring. Default 14 days.
    pub expiring_secs: i64,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            dormant_secs: 30 * 86_400,
            expiring_secs: 14 * 86_400,
        }
    }
}

/// The last allowed launch of one person on one store, as the trail records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastLaunch {
    pub at: UnixTime,
    pub idp: Option<String>,
    pub email: Option<String>,
    pub role: Option<String>,
    pub rule: Option<String>,
}

/// Last launches keyed by (subject, store).
pub type Launches = BTreeMap<(String, String), LastLaunch>;

/// A customer carrying `storegate_subject`: (account id, customer, `{idp}:{subject}`).
pub type BoundCustomer = (String, Customer, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    Grant,
    NoScimRecord,
    OrphanCustomer,
}

impl RowKind {
    fn as_str(self) -> &'static str {
        match self {
            RowKind::Grant => "grant",
            RowKind::NoScimRecord => "no_scim_record",
            RowKind::OrphanCustomer => "orphan_customer",
        }
    }
}

/// One entitlement of one person on one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Stable across reports: `{kind}:{idp}:{subject}:{store}:{role}` (orphans:
    /// `orphan_customer:{account}:{customer id}:{store}`).
    pub id: String,
    pub kind: RowKind,
    pub subject: String,
    pub idp: Option<String>,
    pub email: Option<String>,
    pub store: String,
    pub role: Option<String>,
    pub rule: Option<String>,
    pub template: Option<String>,
    pub customer_group: Option<String>,
    /// RFC 3339; `None`: no end.
    pub expires_at: Option<String>,
    pub expiring: bool,
    /// RFC 3339; `None`: never launched (as far as the trail reaches).
    pub last_launch_at: Option<String>,
    pub dormant: bool,
    pub in_scim: bool,
    pub customer_id: Option<u64>,
}

/// The report: rows sorted by id, and what could not be read (the report is partial then).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub warnings: Vec<String>,
    /// Where `last_launch_at` was read: "the audit table (every replica)" or "this replica's
    /// audit files" (set by [`sources::gather`]; empty from [`build`]).
    pub launches_from: String,
}

/// The subjects SCIM users (active ones only, or any) and tombstones carry: built once per
/// report, so that asking about each launch and customer is a lookup, not a pass over every user.
fn scim_subjects(cfg: &Config, scim: &ScimData, active_only: bool) -> HashSet<String> {
    let users = scim
        .users
        .values()
        .map(|u| u.value())
        .filter(|u| !active_only || user_active(u));
    let tombstones = scim
        .tombstones
        .values()
        .filter(|_| !active_only)
        .map(|t| t.value());
    users
        .chain(tombstones)
        // Only the subject is read: no group names.
        .filter_map(|u| identity_with_groups(cfg, &u, Vec::new))
        .map(|i| i.subject)
        .collect()
}

/// Builds the report at `now` from the SCIM data, the trail's last launches and the bound
/// customers.
pub fn build(
    cfg: &Config,
    scim: &ScimData,
    launches: &Launches,
    bound: &[BoundCustomer],
    now: UnixTime,
    w: Windows,
) -> Report {
    let mut rows = Vec::new();
    let mut seen_subjects: HashSet<String> = HashSet::new();
    let memberships = scim.group_names_by_member();
    for (id, user) in &scim.users {
        let user = &user.value();
        if !user_active(user) {
            continue;
        }
        let groups = || memberships.get(id.as_str()).cloned().unwrap_or_default();
        let Some(identity) = identity_with_groups(cfg, user, groups) else {
            continue;
        };
        seen_subjects.insert(identity.subject.clone());
        for g in cfg.policy.grants(&identity, now) {
            let last = launches.get(&(identity.subject.clone(), g.store.to_string()));
            rows.push(Row {
                id: format!(
                    "grant:{}:{}:{}:{}",
                    identity.idp, identity.subject, g.store, g.role
                ),
                kind: RowKind::Grant,
                subject: identity.subject.clone(),
                idp: Some(identity.idp.to_string()),
                email: identity.email.clone(),
                store: g.store.to_string(),
                role: Some(g.role.clone()),
                rule: Some(g.rule.clone()),
                template: g.template.clone(),
                customer_group: g.customer_group.as_ref().map(|c| match c {
                    CustomerGroupRef::Name(n) => n.clone(),
                    CustomerGroupRef::Id(id) => id.to_string(),
                }),
                expires_at: g.expires_at.map(rfc3339),
                expiring: g.expires_at.is_some_and(|t| t - now <= w.expiring_secs),
                last_launch_at: last.map(|l| rfc3339(l.at)),
                dormant: last.is_none_or(|l| now - l.at >= w.dormant_secs),
                in_scim: true,
                customer_id: None,
            });
        }
    }
    let known = scim_subjects(cfg, scim, false);
    for ((subject, store), l) in launches {
        if seen_subjects.contains(subject) || known.contains(subject) {
            continue;
        }
        let idp = l.idp.clone().unwrap_or_default();
        rows.push(Row {
            id: format!(
                "no_scim_record:{idp}:{subject}:{store}:{}",
                l.role.as_deref().unwrap_or("")
            ),
            kind: RowKind::NoScimRecord,
            subject: subject.clone(),
            idp: l.idp.clone(),
            email: l.email.clone(),
            store: store.clone(),
            role: l.role.clone(),
            rule: l.rule.clone(),
            template: None,
            customer_group: None,
            expires_at: None,
            expiring: false,
            last_launch_at: Some(rfc3339(l.at)),
            dormant: now - l.at >= w.dormant_secs,
            in_scim: false,
            customer_id: None,
        });
    }
    let known_active = scim_subjects(cfg, scim, true);
    for (account, customer, bound_to) in bound {
        let (idp, subject) = match bound_to.split_once(':') {
            Some((i, s)) => (Some(i.to_owned()), s.to_owned()),
            None => (None, bound_to.clone()),
        };
        if seen_subjects.contains(&subject) || known_active.contains(&subject) {
            continue;
        }
        // The stores of the account this customer can sign in to (no channel list: all of them).
        let stores: Vec<String> = cfg
            .stores
            .iter()
            .filter(|s| &s.account == account)
            .filter(|s| {
                customer
                    .channel_ids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&s.channel_id))
            })
            .map(|s| s.id.to_string())
            .collect();
        let stores = if stores.is_empty() {
            vec![String::new()]
        } else {
            stores
        };
        for store in stores {
            let last = launches.get(&(subject.clone(), store.clone()));
            rows.push(Row {
                id: format!("orphan_customer:{account}:{}:{store}", customer.id),
                kind: RowKind::OrphanCustomer,
                subject: subject.clone(),
                idp: idp.clone(),
                email: Some(customer.email.clone()),
                store,
                role: None,
                rule: None,
                template: None,
                customer_group: (customer.customer_group_id != 0)
                    .then(|| customer.customer_group_id.to_string()),
                expires_at: None,
                expiring: false,
                last_launch_at: last.map(|l| rfc3339(l.at)),
                dormant: last.is_none_or(|l| now - l.at >= w.dormant_secs),
                in_scim: false,
                customer_id: Some(customer.id),
            });
        }
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Report {
        rows,
        warnings: Vec::new(),
        launches_from: String::new(),
    }
}

/// The CSV columns, in order (the same names as the JSON members).
pub const COLUMNS: [&str; 16] = [
    "id",
    "kind",
    "subject",
    "idp",
    "email",
    "store",
    "role",
    "rule",
    "template",
    "customer_group",
    "expires_at",
    "expiring",
    "last_launch_at",
    "dormant",
    "in_scim",
    "customer_id",
];

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break. A field that
/// starts like a spreadsheet formula is prefixed with `'` so opening the file runs nothing.
fn csv_field(out: &mut String, value: &str) {
    let guarded;
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        guarded = format!("'{value}");
        guarded.as_str()
    } else {
        value
    };
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn fields(r: &Row) -> [String; 16] {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        r.id.clone(),
        r.kind.as_str().to_owned(),
        r.subject.clone(),
        opt(&r.idp),
        opt(&r.email),
        r.store.clone(),
        opt(&r.role),
        opt(&r.rule),
        opt(&r.template),
        opt(&r.customer_group),
        opt(&r.expires_at),
        r.expiring.to_string(),
        opt(&r.last_launch_at),
        r.dormant.to_string(),
        r.in_scim.to_string(),
        r.customer_id.map(|c| c.to_string()).unwrap_or_default(),
    ]
}

/// The rows as CSV with a header line, `\r\n` line ends (RFC 4180).
pub fn to_csv(rows: &[Row]) -> String {
    csv(&COLUMNS, rows.iter().map(fields))
}

/// A CSV table: the header line of `columns`, then one line per row, each field escaped by
/// [`csv_field`], `\r\n` line ends (RFC 4180). Every report that writes CSV goes through here,
/// so the quoting and the formula guard are the same everywhere.
pub fn csv<R, F>(columns: &[&str], rows: R) -> String
where
    R: IntoIterator<Item = F>,
    F: IntoIterator<Item = String>,
{
    let mut out = columns.join(",");
    out.push_str("\r\n");
    for r in rows {
        for (i, f) in r.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            csv_field(&mut out, &f);
        }
        out.push_str("\r\n");
    }
    out
}

/// The rows as a JSON array (absent values are `null`).
pub fn to_json(rows: &[Row]) -> String {
    serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests;
