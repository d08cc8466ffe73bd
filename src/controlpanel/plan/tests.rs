use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::controlpanel::model::{DesiredStaff, Member};

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn staff(email: &str, stores: &[&str]) -> (String, DesiredStaff) {
    (
        email.to_owned(),
        DesiredStaff {
            subject: format!("nam:{email}"),
            email: email.to_owned(),
            stores: stores
                .iter()
                .map(|s| ((*s).to_owned(), set(&["Manage_Products"])))
                .collect(),
        },
    )
}

/// An account whose users are `users` (email, stores), ids `bc/account/user/N` in order.
fn observed(users: &[(&str, &[&str])]) -> Observed {
    let mut o = Observed::default();
    for s in ["s1", "s2"] {
        o.stores.insert(s.into(), BTreeMap::new());
    }
    for (i, (email, stores)) in users.iter().enumerate() {
        let id = Some(format!("bc/account/user/{}", i + 1));
        o.account_users.insert((*email).to_owned(), id.clone());
        for s in *stores {
            o.stores.entry((*s).to_owned()).or_default().insert(
                (*email).to_owned(),
                Member {
                    user_id: id.clone(),
                    permissions: set(&["No_Permission_Required"]),
                },
            );
        }
    }
    o
}

fn describe(p: &Plan) -> Vec<String> {
    p.steps
        .iter()
        .map(|s| {
            format!(
                "{} {} {}{}",
                s.kind.label(),
                s.change.name(),
                s.change.email(),
                s.change
                    .store()
                    .map(|x| format!(" {x}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

fn stores() -> BTreeSet<String> {
    set(&["s1", "s2"])
}

#[test]
fn leavers_go_first_then_movers_then_additions_and_unmanaged_are_only_listed() {
    let desired = DesiredStaffState {
        staff: [
            staff("joiner@corp.example", &["s1", "s2"]),
            staff("mover@corp.example", &["s2"]),
        ]
        .into_iter()
        .collect(),
        leavers: [("leaver@corp.example".to_owned(), None)]
            .into_iter()
            .collect(),
    };
    let o = observed(&[
        ("owner@corp.example", &["s1", "s2"]),
        ("mover@corp.example", &["s1"]),
        ("leaver@corp.example", &["s1", "s2"]),
    ]);
    let p = plan(&desired, &o, &stores(), Rules::default());
    assert_eq!(
        describe(&p),
        [
            "leaver removeUserFromStore leaver@corp.example s1",
            "leaver removeUserFromStore leaver@corp.example s2",
            "leaver removeUserFromAccount leaver@corp.example",
            "mover removeUserFromStore mover@corp.example s1",
            "addition addUserToAccount joiner@corp.example",
            "addition addUserToStore joiner@corp.example s1",
            "addition addUserToStore joiner@corp.example s2",
            "addition addUserToStore mover@corp.example s2",
        ]
    );
    assert_eq!(
        p.unmanaged,
        [Unmanaged {
            email: "owner@corp.example".into(),
            stores: vec!["s1".into(), "s2".into()]
        }]
    );
    assert!(matches!(
        &p.steps[0].change,
        Change::RemoveUserFromStore { user_id: Some(id), .. } if id == "bc/account/user/3"
    ));
}

#[test]
fn keep_account_on_leave_keeps_the_account_user_and_manage_all_removes_the_unmanaged() {
    let desired = DesiredStaffState {
        staff: BTreeMap::new(),
        leavers: [("leaver@corp.example".to_owned(), None)]
            .into_iter()
            .collect(),
    };
    let o = observed(&[
        ("leaver@corp.example", &["s1"]),
        ("contractor@corp.example", &["s2"]),
    ]);
    let keep = Rules {
        keep_account_on_leave: true,
        manage_all: false,
    };
    assert_eq!(
        describe(&plan(&desired, &o, &stores(), keep)),
        ["leaver removeUserFromStore leaver@corp.example s1"]
    );
    let all = Rules {
        keep_account_on_leave: false,
        manage_all: true,
    };
    assert_eq!(
        describe(&plan(&desired, &o, &stores(), all)),
        [
            "leaver removeUserFromStore contractor@corp.example s2",
            "leaver removeUserFromAccount contractor@corp.example",
            "leaver removeUserFromStore leaver@corp.example s1",
            "leaver removeUserFromAccount leaver@corp.example",
        ]
    );
}

#[test]
fn an_active_person_without_grants_loses_the_stores_but_keeps_the_account_user() {
    let desired = DesiredStaffState {
        staff: [staff("ada@corp.example", &[])].into_iter().collect(),
        leavers: BTreeMap::new(),
    };
    let o = observed(&[("ada@corp.example", &["s1"])]);
    assert_eq!(
        describe(&plan(&desired, &o, &stores(), Rules::default())),
        ["mover removeUserFromStore ada@corp.example s1"]
    );
}

#[test]
fn stores_outside_the_account_are_neither_added_nor_removed() {
    let desired = DesiredStaffState {
        staff: [staff("ada@corp.example", &["s1", "elsewhere"])]
            .into_iter()
            .collect(),
        leavers: BTreeMap::new(),
    };
    let mut o = observed(&[("ada@corp.example", &["s1"])]);
    o.stores.insert("other".into(), BTreeMap::new());
    assert!(
        plan(&desired, &o, &stores(), Rules::default())
            .steps
            .is_empty()
    );
}

#[test]
fn a_plan_applied_to_what_was_read_leaves_nothing_to_do() {
    let desired = DesiredStaffState {
        staff: [
            staff("joiner@corp.example", &["s1", "s2"]),
            staff("mover@corp.example", &["s2"]),
        ]
        .into_iter()
        .collect(),
        leavers: [("leaver@corp.example".to_owned(), None)]
            .into_iter()
            .collect(),
    };
    let mut o = observed(&[
        ("mover@corp.example", &["s1"]),
        ("leaver@corp.example", &["s1", "s2"]),
    ]);
    let p = plan(&desired, &o, &stores(), Rules::default());
    for s in &p.steps {
        apply(&mut o, &s.change);
    }
    assert!(
        plan(&desired, &o, &stores(), Rules::default())
            .steps
            .is_empty()
    );
    // The joiner was added since the read: removing them needs the account read again.
    let gone = DesiredStaffState {
        staff: BTreeMap::new(),
        leavers: [("joiner@corp.example".to_owned(), None)]
            .into_iter()
            .collect(),
    };
    assert!(plan(&gone, &o, &stores(), Rules::default()).needs_ids());
}
