//! Control-panel grants: one behaviour per test, over a small estate of two store hashes.
//!
//! `acme-main` has two channels (`main-us`, `main-b2b`), `acme-eu` one (`eu`); `outlet` has no
//! `[[bigcommerce]]` mapping at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::super::{
    Conditions, DenyReason, GrantSpec, Policy, Rule, StoreEntry, StoreSelector, Template,
};
use super::{ControlPanelGrant, ControlPanelRefusal, ControlPanelSetup};
use crate::clock::UnixTime;
use crate::identity::{Identity, IdpId, StoreId};

const NOW: UnixTime = 1_800_000_000;

fn sid(s: &str) -> StoreId {
    StoreId::new(s)
}

fn strs(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn person(groups: &[&str]) -> Identity {
    Identity {
        subject: "ann-0001".into(),
        idp: IdpId::new("am"),
        email: Some("ann@example.com".into()),
        email_verified: true,
        given_name: None,
        family_name: None,
        name: None,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        roles: vec![],
        attributes: BTreeMap::new(),
        auth: Default::default(),
        signed_in_at: NOW,
    }
}

fn store(id: &str) -> StoreEntry {
    StoreEntry {
        id: sid(id),
        tags: vec![],
        template: Some("staff".into()),
    }
}

fn setup() -> ControlPanelSetup {
    ControlPanelSetup {
        permission_sets: BTreeMap::from([
            (
                "merchandiser".to_owned(),
                strs(&["Manage_Products", "Create_Product"]),
            ),
            (
                "finance".to_owned(),
                strs(&["Manage_Orders", "Refund_Orders"]),
            ),
        ]),
        store_accounts: HashMap::from([
            (sid("main-us"), "acme-main".to_owned()),
            (sid("main-b2b"), "acme-main".to_owned()),
            (sid("eu"), "acme-eu".to_owned()),
        ]),
    }
}

/// The `staff` template: a merchandiser holds the `merchandiser` set; a buyer holds none.
fn staff_template() -> Template {
    Template {
        name: "staff".into(),
        roles: BTreeMap::from([
            (
                "merchandiser".to_owned(),
                GrantSpec {
                    control_panel: Some("merchandiser".into()),
                    ..Default::default()
                },
            ),
            ("buyer".to_owned(), GrantSpec::default()),
        ]),
    }
}

fn estate(rules: Vec<Rule>) -> Policy {
    Policy::new(
        vec![
            store("main-us"),
            store("main-b2b"),
            store("eu"),
            store("outlet"),
        ],
        vec![staff_template()],
        rules,
    )
    .with_control_panel(setup())
}

fn on(stores: &[&str]) -> StoreSelector {
    StoreSelector::Only(stores.iter().map(|s| sid(s)).collect())
}

fn for_group(rule: Rule, group: &str) -> Rule {
    Rule {
        conditions: Conditions {
            groups_any: vec![group.into()],
            ..Default::default()
        },
        ..rule
    }
}

fn with_set(rule: Rule, set: &str) -> Rule {
    Rule {
        grant: GrantSpec {
            control_panel: Some(set.into()),
            ..Default::default()
        },
        ..rule
    }
}

#[test]
fn grants_of_several_channels_of_one_hash_combine() {
    let p = estate(vec![
        Rule::allow("merch-us", "merchandiser", on(&["main-us"])),
        with_set(
            Rule::allow("finance-b2b", "buyer", on(&["main-b2b"])),
            "finance",
        ),
    ]);
    let got = p.control_panel_grants(&person(&[]), NOW);
    assert_eq!(
        got,
        BTreeMap::from([(
            "acme-main".to_owned(),
            ControlPanelGrant {
                permissions: strs(&[
                    "Create_Product",
                    "Manage_Orders",
                    "Manage_Products",
                    "Refund_Orders"
                ]),
                sets: vec!["merchandiser".into(), "finance".into()],
                rules: vec!["merch-us".into(), "finance-b2b".into()],
                expires_at: None,
            }
        )])
    );
}

#[test]
fn the_same_set_through_two_channels_is_listed_once() {
    let p = estate(vec![Rule::allow(
        "merch",
        "merchandiser",
        on(&["main-us", "main-b2b", "eu"]),
    )]);
    let got = p.control_panel_grants(&person(&[]), NOW);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["acme-eu", "acme-main"]);
    let main = &got["acme-main"];
    assert_eq!(main.sets, ["merchandiser"]);
    assert_eq!(main.rules, ["merch"]);
    assert_eq!(
        main.permissions,
        strs(&["Create_Product", "Manage_Products"])
    );
}

#[test]
fn a_deny_rule_takes_the_denied_channels_set_out_and_a_fully_denied_hash_gives_nothing() {
    let rules = |deny_stores: &[&str]| {
        vec![
            for_group(
                Rule::deny("contractors-out", on(deny_stores)),
                "contractors",
            ),
            Rule::allow("merch-us", "merchandiser", on(&["main-us"])),
            with_set(
                Rule::allow("finance-b2b", "buyer", on(&["main-b2b"])),
                "finance",
            ),
        ]
    };
    let contractor = person(&["contractors"]);

    // One channel denied: only the other channel's set is left.
    let p = estate(rules(&["main-us"]));
    let got = p.control_panel_grants(&contractor, NOW);
    assert_eq!(got["acme-main"].sets, ["finance"]);
    assert_eq!(
        got["acme-main"].permissions,
        strs(&["Manage_Orders", "Refund_Orders"])
    );

    // Every channel denied: no grant, and the refusal names the deny rule.
    let p = estate(rules(&["main-us", "main-b2b"]));
    assert!(p.control_panel_grants(&contractor, NOW).is_empty());
    assert_eq!(
        p.authorize_control_panel(&contractor, "acme-main", NOW),
        Err(ControlPanelRefusal::Denied(DenyReason::DeniedByRule {
            rule: "contractors-out".into()
        }))
    );
    // Someone the deny rule does not match keeps both sets.
    assert_eq!(
        p.control_panel_grants(&person(&[]), NOW)["acme-main"].sets,
        ["merchandiser", "finance"]
    );
}

#[test]
fn an_ended_window_gives_no_grant_and_the_refusal_says_it_expired() {
    let ended = Rule {
        not_after: Some(NOW),
        ..Rule::allow("agency", "merchandiser", on(&["eu"]))
    };
    let p = estate(vec![ended]);
    assert!(p.control_panel_grants(&person(&[]), NOW).is_empty());
    assert_eq!(
        p.authorize_control_panel(&person(&[]), "acme-eu", NOW),
        Err(ControlPanelRefusal::Denied(DenyReason::Expired {
            rule: "agency".into(),
            at: NOW
        }))
    );
    // A second earlier, it still held, with its end date.
    let got = p.control_panel_grants(&person(&[]), NOW - 1);
    assert_eq!(got["acme-eu"].expires_at, Some(NOW));
}

#[test]
fn the_combined_grant_ends_with_its_last_channel() {
    let until = |t: UnixTime, rule: Rule| Rule {
        not_after: Some(t),
        ..rule
    };
    let p = estate(vec![
        until(
            NOW + 100,
            Rule::allow("merch-us", "merchandiser", on(&["main-us"])),
        ),
        until(
            NOW + 50,
            with_set(
                Rule::allow("finance-b2b", "buyer", on(&["main-b2b"])),
                "finance",
            ),
        ),
    ]);
    assert_eq!(
        p.control_panel_grants(&person(&[]), NOW)["acme-main"].expires_at,
        Some(NOW + 100)
    );
    let p = estate(vec![
        until(
            NOW + 100,
            Rule::allow("merch-us", "merchandiser", on(&["main-us"])),
        ),
        with_set(
            Rule::allow("finance-b2b", "buyer", on(&["main-b2b"])),
            "finance",
        ),
    ]);
    assert_eq!(
        p.control_panel_grants(&person(&[]), NOW)["acme-main"].expires_at,
        None,
        "one channel without an end keeps the access open-ended"
    );
}

#[test]
fn a_rules_set_overrides_its_templates_and_a_role_without_one_gives_none() {
    // The template's set for the role.
    let p = estate(vec![Rule::allow("merch", "merchandiser", on(&["eu"]))]);
    assert_eq!(
        p.control_panel_grants(&person(&[]), NOW)["acme-eu"].sets,
        ["merchandiser"]
    );
    // The rule's own set wins over the template's.
    let p = estate(vec![with_set(
        Rule::allow("merch", "merchandiser", on(&["eu"])),
        "finance",
    )]);
    let got = p.control_panel_grants(&person(&[]), NOW);
    assert_eq!(got["acme-eu"].sets, ["finance"]);
    assert_eq!(
        got["acme-eu"].permissions,
        strs(&["Manage_Orders", "Refund_Orders"])
    );
    // A storefront-only role: the store is granted, the control panel is not.
    let p = estate(vec![Rule::allow("buyers", "buyer", on(&["eu"]))]);
    assert!(p.control_panel_grants(&person(&[]), NOW).is_empty());
    assert_eq!(
        p.authorize_control_panel(&person(&[]), "acme-eu", NOW),
        Err(ControlPanelRefusal::NoControlPanel {
            rule: "buyers".into()
        })
    );
}

#[test]
fn unknown_stores_accounts_and_sets_give_nothing() {
    // `outlet` has no `[[bigcommerce]]` mapping: its grant has no hash to belong to.
    let p = estate(vec![Rule::allow("merch", "merchandiser", on(&["outlet"]))]);
    assert!(p.control_panel_grants(&person(&[]), NOW).is_empty());
    // No store of that hash at all.
    assert_eq!(
        p.authorize_control_panel(&person(&[]), "acme-nope", NOW),
        Err(ControlPanelRefusal::UnknownAccount)
    );
    // A hand-built policy naming a set that does not exist grants no (empty) set.
    let p = estate(vec![with_set(
        Rule::allow("merch", "merchandiser", on(&["eu"])),
        "ghost",
    )]);
    assert!(p.control_panel_grants(&person(&[]), NOW).is_empty());
    // Without the control-panel setup (older callers), no grant either.
    let p = Policy::new(
        vec![store("eu")],
        vec![staff_template()],
        vec![Rule::allow("merch", "merchandiser", on(&["eu"]))],
    );
    assert!(p.control_panel_grants(&person(&[]), NOW).is_empty());
}

#[test]
fn authorize_returns_the_same_grant_as_the_map() {
    let p = estate(vec![Rule::allow(
        "merch",
        "merchandiser",
        on(&["main-us", "eu"]),
    )]);
    let id = person(&[]);
    let all = p.control_panel_grants(&id, NOW);
    assert_eq!(
        p.authorize_control_panel(&id, "acme-main", NOW).as_ref(),
        Ok(&all["acme-main"])
    );
    // Default deny when nothing matches.
    let p = estate(vec![for_group(
        Rule::allow("merch", "merchandiser", on(&["eu"])),
        "bc-merch",
    )]);
    assert_eq!(
        p.authorize_control_panel(&id, "acme-eu", NOW),
        Err(ControlPanelRefusal::Denied(DenyReason::NoMatchingRule))
    );
    assert_eq!(
        p.authorize_control_panel(&id, "acme-eu", NOW)
            .unwrap_err()
            .code(),
        "not_entitled"
    );
}
