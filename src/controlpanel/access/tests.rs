//! The report's rows for a population covering every kind, against rows written by hand.
//!
//! Account `acme`, stores `main` (hash `h1`) and `eu` (hash `h2`):
//! - ada (managed, merchandiser on both): h1 holds Manage_Users and lacks Edit_Products
//!   (flagged drift); h2 holds exactly the set (ok);
//! - bob (managed, granted h2 only): in h1 (to remove: no grant), not yet in h2 (pending);
//! - dan (SCIM leaver) in h1 holding Create_Store_API_Tokens: to remove, flagged;
//! - owner (not in SCIM) in h1 holding Grant_High_Risk_Store_Permissions: unmanaged, not flagged.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::config::account::AccountStore;
use crate::controlpanel::model::{DesiredStaff, Member};
use crate::secret::Secret;

const READ_AT: UnixTime = 1_790_000_000;

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn account(manage_all: bool) -> ControlPanelAccount {
    ControlPanelAccount {
        id: "acme".into(),
        account_uuid: "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b".into(),
        access_token: Secret::new("t".to_owned()),
        api_base: url::Url::parse("http://127.0.0.1:1").unwrap(),
        stores: vec![
            AccountStore {
                id: "main".into(),
                store_hash: "h1".into(),
            },
            AccountStore {
                id: "eu".into(),
                store_hash: "h2".into(),
            },
        ],
        keep_account_on_leave: false,
        manage_all,
    }
}

const MERCH: &[&str] = &["Create_Product", "Edit_Products", "Manage_Products"];

fn population() -> (DesiredStaffState, ExpectedSets, Observed) {
    let mut d = DesiredStaffState::default();
    d.staff.insert(
        "ada@x.example".into(),
        DesiredStaff {
            subject: "nam:ada".into(),
            email: "ada@x.example".into(),
            stores: BTreeMap::from([("h1".into(), set(MERCH)), ("h2".into(), set(MERCH))]),
        },
    );
    d.staff.insert(
        "bob@x.example".into(),
        DesiredStaff {
            subject: "nam:bob".into(),
            email: "bob@x.example".into(),
            stores: BTreeMap::from([("h2".into(), set(&["Manage_Orders"]))]),
        },
    );
    d.leavers.insert("dan@x.example".into(), None);
    let sets = ExpectedSets::from([
        (
            "ada@x.example".to_owned(),
            BTreeMap::from([
                ("h1".to_owned(), set(&["merchandiser"])),
                ("h2".to_owned(), set(&["merchandiser"])),
            ]),
        ),
        (
            "bob@x.example".to_owned(),
            BTreeMap::from([("h2".to_owned(), set(&["finance"]))]),
        ),
    ]);
    let member = |id: u32, perms: &[&str]| Member {
        user_id: Some(format!("bc/account/user/{id}")),
        permissions: set(perms)
            .into_iter()
            .chain([NO_PERMISSION_REQUIRED.to_owned()])
            .collect(),
    };
    let mut o = Observed::default();
    o.stores.insert(
        "h1".into(),
        BTreeMap::from([
            (
                "ada@x.example".to_owned(),
                member(1, &["Create_Product", "Manage_Products", "Manage_Users"]),
            ),
            ("bob@x.example".to_owned(), member(2, &["Manage_Orders"])),
            (
                "dan@x.example".to_owned(),
                member(3, &["Create_Store_API_Tokens"]),
            ),
            (
                "owner@x.example".to_owned(),
                member(4, &["Grant_High_Risk_Store_Permissions"]),
            ),
        ]),
    );
    o.stores.insert(
        "h2".into(),
        BTreeMap::from([("ada@x.example".to_owned(), member(1, MERCH))]),
    );
    (d, sets, o)
}

/// (id, kind, flagged, subject, user_id, expected_sets, held, missing, excess, high_risk, reason)
type Brief = (
    String,
    &'static str,
    bool,
    Option<String>,
    Option<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Option<String>,
);

fn brief(rows: &[Row]) -> Vec<Brief> {
    rows.iter()
        .map(|r| {
            (
                r.id.clone(),
                r.kind.as_str(),
                r.flagged,
                r.subject.clone(),
                r.user_id.clone(),
                r.expected_sets.clone(),
                r.held.clone(),
                r.missing.clone(),
                r.excess.clone(),
                r.high_risk.clone(),
                r.reason.clone(),
            )
        })
        .collect()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[test]
fn every_kind_of_row_is_reported_exactly_with_high_risk_first() {
    let (d, sets, o) = population();
    let rows = rows(&account(false), &d, &sets, &o, READ_AT);
    let none = Vec::new;
    assert_eq!(
        brief(&rows),
        [
            (
                "control_panel:acme:main:ada@x.example".to_owned(),
                "drift",
                true,
                s("nam:ada"),
                s("bc/account/user/1"),
                list(&["merchandiser"]),
                list(&["Create_Product", "Manage_Products", "Manage_Users"]),
                list(&["Edit_Products"]),
                list(&["Manage_Users"]),
                list(&["Manage_Users"]),
                None
            ),
            (
                "control_panel:acme:main:dan@x.example".to_owned(),
                "to_remove",
                true,
                None,
                s("bc/account/user/3"),
                none(),
                list(&["Create_Store_API_Tokens"]),
                none(),
                list(&["Create_Store_API_Tokens"]),
                list(&["Create_Store_API_Tokens"]),
                s("leaver")
            ),
            (
                "control_panel:acme:eu:ada@x.example".to_owned(),
                "ok",
                false,
                s("nam:ada"),
                s("bc/account/user/1"),
                list(&["merchandiser"]),
                list(MERCH),
                none(),
                none(),
                none(),
                None
            ),
            (
                "control_panel:acme:eu:bob@x.example".to_owned(),
                "pending_addition",
                false,
                s("nam:bob"),
                None,
                list(&["finance"]),
                none(),
                none(),
                none(),
                none(),
                None
            ),
            (
                "control_panel:acme:main:bob@x.example".to_owned(),
                "to_remove",
                false,
                s("nam:bob"),
                s("bc/account/user/2"),
                none(),
                list(&["Manage_Orders"]),
                none(),
                list(&["Manage_Orders"]),
                none(),
                s("no_grant")
            ),
            (
                "control_panel:acme:main:owner@x.example".to_owned(),
                "unmanaged",
                false,
                None,
                s("bc/account/user/4"),
                none(),
                list(&["Grant_High_Risk_Store_Permissions"]),
                none(),
                none(),
                none(),
                None
            ),
        ]
    );
    assert!(rows.iter().all(|r| r.read_at == "2026-09-21T14:13:20Z"));
    assert_eq!(rows[3].expected, list(&["Manage_Orders"]));
}

#[test]
fn an_unmanaged_user_is_to_remove_only_with_manage_all() {
    let (d, sets, o) = population();
    let rows = rows(&account(true), &d, &sets, &o, READ_AT);
    let owner = rows
        .iter()
        .find(|r| r.email == "owner@x.example")
        .expect("owner row");
    assert_eq!(
        (
            owner.kind,
            owner.reason.as_deref(),
            owner.flagged,
            owner.high_risk.clone()
        ),
        (
            RowKind::ToRemove,
            Some("manage_all"),
            true,
            list(&["Grant_High_Risk_Store_Permissions"])
        )
    );
    assert!(rows.iter().all(|r| r.kind != RowKind::Unmanaged));
}

#[test]
fn csv_lists_are_space_separated_and_fields_escaped_by_the_shared_writer() {
    let (d, sets, mut o) = population();
    // An email with a comma and a quote (the API returns what the administrator typed).
    let odd = "\"odd,one\"@x.example".to_owned();
    if let Some(m) = o.stores.get_mut("h2") {
        m.insert(
            odd.clone(),
            Member {
                user_id: Some("bc/account/user/9".into()),
                permissions: set(&["Manage_Orders", "Refund_Orders"]),
            },
        );
    }
    let csv = to_csv(&rows(&account(false), &d, &sets, &o, READ_AT));
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(lines[0], COLUMNS.join(","));
    assert_eq!(
        lines[1],
        "control_panel:acme:main:ada@x.example,drift,true,acme,main,h1,nam:ada,ada@x.example,bc/account/user/1,merchandiser,Create_Product Edit_Products Manage_Products,Create_Product Manage_Products Manage_Users,Edit_Products,Manage_Users,Manage_Users,,2026-09-21T14:13:20Z"
    );
    assert!(
        csv.contains("\r\n\"control_panel:acme:eu:\"\"odd,one\"\"@x.example\",unmanaged,false,acme,eu,h2,,\"\"\"odd,one\"\"@x.example\",bc/account/user/9,,,Manage_Orders Refund_Orders,,,,,2026-09-21T14:13:20Z\r\n"),
        "{csv}"
    );
    assert_eq!(lines.len(), 2 + 7, "header, 7 rows, then the empty tail");
}

#[test]
fn a_spent_budget_and_a_refused_token_say_what_to_do() {
    assert_eq!(
        halt_message("acme", &Halt::Paused { retry_at: READ_AT }),
        "[[account]] \"acme\": the Account API budget is spent (70 calls per hour, shared with `storegate reconcile` and every replica, or BigCommerce answered 429); the next call is free at 2026-09-21T14:13:20Z. No report was printed: run it again after that time"
    );
    assert_eq!(
        halt_message(
            "acme",
            &Halt::Failed(AccountApiError::Refused {
                status: 401,
                message: "Invalid X-Auth-Token".into()
            })
        ),
        "[[account]] \"acme\": the Account API refused the token (401: Invalid X-Auth-Token). Set `access_token` to the token of an account-level API account of this account with the scope account_users_read. No report was printed"
    );
}
