use std::collections::HashMap;

use super::*;
use crate::bigcommerce::api::AttributeValue;

fn desired(account: &str, email: &str, channels: &[u64], group: Option<&str>) -> DesiredCustomer {
    DesiredCustomer {
        account: account.into(),
        email: email.into(),
        first_name: "A".into(),
        last_name: "B".into(),
        channel_ids: channels.to_vec(),
        group: group.map(|g| CustomerGroupRef::Name(g.into())),
        subject: "nam:a".into(),
        b2b: None,
    }
}

fn customer(id: u64, email: &str, channels: Option<Vec<u64>>, group: u64) -> Customer {
    Customer {
        id,
        email: email.into(),
        first_name: "A".into(),
        last_name: "B".into(),
        customer_group_id: group,
        channel_ids: channels,
        origin_channel_id: Some(1),
        // Bound to the desired subject: these tests are about fields, not adoption.
        attributes: vec![AttributeValue {
            attribute_id: ATTR,
            attribute_value: "nam:a".into(),
        }],
    }
}

/// The `storegate_subject` attribute's id on both accounts.
const ATTR: u64 = 4;

fn groups() -> GroupIds {
    let mut g = GroupIds::default();
    g.named.insert(("main".into(), "Staff".into()), 7);
    g.locked.insert("main".into(), 99);
    g.locked.insert("outlet".into(), 98);
    g.subject_attribute.insert("main".into(), ATTR);
    g.subject_attribute.insert("outlet".into(), ATTR);
    g
}

fn actual(list: &[(&str, Customer)]) -> Actual {
    let mut a: Actual = HashMap::new();
    for (acc, c) in list {
        a.entry((*acc).into())
            .or_default()
            .insert(c.email.to_lowercase(), c.clone());
    }
    a
}

const ACCOUNTS: [&str; 2] = ["main", "outlet"];

fn accounts() -> Vec<String> {
    ACCOUNTS.iter().map(|a| (*a).to_owned()).collect()
}

#[test]
fn joiner_without_customer_is_created_with_resolved_group() {
    let d = Desired {
        customers: vec![desired("main", "a@x.com", &[1, 2], Some("Staff"))],
        leavers: vec![],
        ..Default::default()
    };
    let p = plan(
        &d,
        &Actual::new(),
        &groups(),
        &accounts(),
        Deprovision::Restrict,
    );
    assert_eq!(
        p,
        vec![Action::Create {
            customer: desired("main", "a@x.com", &[1, 2], Some("Staff")),
            group_id: Some(7)
        }]
    );
}

#[test]
fn customer_already_right_needs_nothing() {
    let d = Desired {
        customers: vec![desired("main", "A@x.com", &[1], Some("Staff"))],
        leavers: vec![],
        ..Default::default()
    };
    let a = actual(&[("main", customer(5, "a@x.com", Some(vec![1]), 7))]);
    assert!(plan(&d, &a, &groups(), &accounts(), Deprovision::Restrict).is_empty());
}

#[test]
fn changed_channels_or_group_is_an_update_with_before_and_after() {
    let d = Desired {
        customers: vec![desired("main", "a@x.com", &[1, 2], Some("Staff"))],
        leavers: vec![],
        ..Default::default()
    };
    let a = actual(&[("main", customer(5, "a@x.com", None, 0))]);
    let p = plan(&d, &a, &groups(), &accounts(), Deprovision::Restrict);
    let [
        Action::Update {
            id: 5,
            before,
            after,
            ..
        },
    ] = p.as_slice()
    else {
        panic!("{p:?}")
    };
    assert_eq!(
        (before.channel_ids.clone(), before.customer_group_id),
        (None, 0)
    );
    assert_eq!(
        (after.channel_ids.clone(), after.customer_group_id),
        (Some(vec![1, 2]), 7)
    );
}

#[test]
fn mover_is_restricted_on_the_account_they_lost() {
    let d = Desired {
        customers: vec![desired("outlet", "a@x.com", &[1], None)],
        leavers: vec![],
        ..Default::default()
    };
    let a = actual(&[
        ("main", customer(5, "a@x.com", Some(vec![1, 2]), 7)),
        ("outlet", customer(6, "a@x.com", Some(vec![1]), 0)),
    ]);
    let p = plan(&d, &a, &groups(), &accounts(), Deprovision::Restrict);
    let [
        Action::Restrict {
            account,
            id: 5,
            after,
            ..
        },
    ] = p.as_slice()
    else {
        panic!("{p:?}")
    };
    assert_eq!(account, "main");
    assert_eq!(
        (after.channel_ids.clone(), after.customer_group_id),
        (Some(vec![1]), 99)
    );
}

#[test]
fn leaver_is_restricted_everywhere_once_and_deleted_only_when_chosen() {
    let d = Desired {
        customers: vec![],
        leavers: vec!["a@x.com".into()],
        ..Default::default()
    };
    let a = actual(&[
        ("main", customer(5, "a@x.com", Some(vec![1, 2]), 7)),
        ("outlet", customer(6, "a@x.com", Some(vec![1]), 0)),
    ]);
    let p = plan(&d, &a, &groups(), &accounts(), Deprovision::Restrict);
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|a| matches!(a, Action::Restrict { .. })));
    let p = plan(&d, &a, &groups(), &accounts(), Deprovision::Delete);
    assert!(p.iter().all(|a| matches!(a, Action::Delete { .. })) && p.len() == 2);
    // Already locked: not repeated.
    let a = actual(&[("main", customer(5, "a@x.com", Some(vec![1]), 99))]);
    assert!(plan(&d, &a, &groups(), &accounts(), Deprovision::Restrict).is_empty());
}

#[test]
fn leaver_without_customers_needs_nothing() {
    let d = Desired {
        customers: vec![],
        leavers: vec!["gone@x.com".into()],
        ..Default::default()
    };
    assert!(
        plan(
            &d,
            &Actual::new(),
            &groups(),
            &accounts(),
            Deprovision::Restrict
        )
        .is_empty()
    );
}

fn unbound(id: u64, email: &str) -> Customer {
    Customer {
        attributes: vec![],
        ..customer(id, email, Some(vec![1]), 7)
    }
}

fn bound_to(id: u64, email: &str, subject: &str) -> Customer {
    Customer {
        attributes: vec![AttributeValue {
            attribute_id: ATTR,
            attribute_value: subject.into(),
        }],
        ..customer(id, email, Some(vec![1]), 7)
    }
}

#[test]
fn customer_without_subject_is_adopted_even_when_its_fields_are_right() {
    let mut d = Desired {
        customers: vec![desired("main", "a@x.com", &[1], Some("Staff"))],
        ..Default::default()
    };
    d.subjects.insert("a@x.com".into(), "nam:a".into());
    let a = actual(&[("main", unbound(5, "A@x.com"))]);
    let p = plan(&d, &a, &groups(), &accounts(), Deprovision::Restrict);
    let [
        Action::Update {
            id: 5,
            before,
            after,
            bind_subject: Some(s),
            ..
        },
    ] = p.as_slice()
    else {
        panic!("{p:?}")
    };
    assert_eq!(before, after, "only the subject is missing");
    assert_eq!(s, "nam:a");
    assert!(conflicts(&d, &a, &groups(), &accounts()).is_empty());
}

#[test]
fn customer_bound_to_another_subject_is_a_conflict_and_left_alone() {
    let mut d = Desired {
        customers: vec![desired("main", "a@x.com", &[1, 2], Some("Staff"))],
        leavers: vec!["b@x.com".into()],
        ..Default::default()
    };
    d.subjects.insert("a@x.com".into(), "nam:a".into());
    d.subjects.insert("b@x.com".into(), "nam:b".into());
    let a = actual(&[
        // Ada's email, but another person's customer: no update, no adoption.
        ("main", bound_to(5, "a@x.com", "nam:someone-else")),
        // The leaver's email, but not the leaver's customer: not restricted.
        ("outlet", bound_to(6, "b@x.com", "nam:stranger")),
        // The leaver's own customer: restricted.
        ("main", bound_to(7, "b@x.com", "nam:b")),
    ]);
    let p = plan(&d, &a, &groups(), &accounts(), Deprovision::Restrict);
    let ids: Vec<u64> = p
        .iter()
        .map(|a| match a {
            Action::Restrict { id, .. } => *id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ids, vec![7]);
    let c = conflicts(&d, &a, &groups(), &accounts());
    assert_eq!(
        c,
        vec![
            Conflict {
                account: "main".into(),
                id: 5,
                email: "a@x.com".into(),
                recorded: "nam:someone-else".into(),
                wanted: "nam:a".into(),
            },
            Conflict {
                account: "outlet".into(),
                id: 6,
                email: "b@x.com".into(),
                recorded: "nam:stranger".into(),
                wanted: "nam:b".into(),
            },
        ]
    );
}
