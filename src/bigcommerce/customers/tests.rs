use async_trait::async_trait;
use parking_lot::Mutex;

use super::*;
use serde_json::Value;

use crate::bigcommerce::api::{AttributeValue, Created, Customer, Paced, RateInfo, StoreTime};
use crate::bigcommerce::test_support::{decision, identity};
use crate::clock::UnixTime;
use crate::identity::Identity;
use crate::policy::CustomerGroupRef;

/// The subject attribute's id in the fake store.
const ATTR: u64 = 4;

/// An in-memory store that records every write.
#[derive(Default)]
struct Fake {
    customers: Mutex<Vec<Customer>>,
    updates: Mutex<Vec<(u64, CustomerUpdate)>>,
    /// The subject attribute values, as BigCommerce keeps them (inline creates included).
    subjects: Mutex<Vec<(u64, String)>>,
    /// `PUT /v3/customers/attribute-values` calls only.
    subject_writes: Mutex<u32>,
}

#[async_trait]
impl StoreTime for Fake {
    async fn store_time(&self) -> Result<UnixTime, ApiError> {
        Ok(0)
    }
}

impl Fake {
    fn with_subject(&self, mut c: Customer) -> Customer {
        c.attributes = self
            .subjects
            .lock()
            .iter()
            .rev()
            .find(|(id, _)| *id == c.id)
            .map(|(_, s)| AttributeValue {
                attribute_id: ATTR,
                attribute_value: s.clone(),
            })
            .into_iter()
            .collect();
        c
    }
}

#[async_trait]
impl Customers for Fake {
    fn store_hash(&self) -> &str {
        "h"
    }
    async fn find_by_emails(&self, emails: &[String]) -> Paced<Vec<Customer>> {
        let found: Vec<Customer> = self
            .customers
            .lock()
            .iter()
            .filter(|c| emails.iter().any(|e| c.email.eq_ignore_ascii_case(e)))
            .cloned()
            .collect();
        let found = found.into_iter().map(|c| self.with_subject(c)).collect();
        (Ok(found), RateInfo::default())
    }
    async fn find_by_ids(&self, _: &[u64]) -> Result<Vec<Customer>, ApiError> {
        unreachable!("a launch finds by email")
    }
    async fn create(&self, items: &[Value]) -> Paced<Created> {
        let mut all = self.customers.lock();
        let mut out = Vec::new();
        for item in items {
            let c: NewCustomer = serde_json::from_value(item.clone()).expect("a NewCustomer");
            let created = Customer {
                id: all.len() as u64 + 1,
                email: c.email,
                first_name: c.first_name,
                last_name: c.last_name,
                customer_group_id: c.customer_group_id.unwrap_or(0),
                channel_ids: Some(c.channel_ids),
                origin_channel_id: c.origin_channel_id,
                attributes: Vec::new(),
            };
            for a in c.attributes {
                assert_eq!(a.attribute_id, ATTR, "only the subject attribute is set");
                self.subjects.lock().push((created.id, a.attribute_value));
            }
            all.push(created.clone());
            out.push(created);
        }
        (Ok(Created::All(out)), RateInfo::default())
    }
    async fn update(&self, items: &[Value]) -> Paced<Vec<Customer>> {
        for item in items {
            let id = item["id"].as_u64().expect("an id");
            let update: CustomerUpdate = serde_json::from_value(item.clone()).expect("an update");
            self.updates.lock().push((id, update));
        }
        (Ok(vec![]), RateInfo::default())
    }
    async fn delete(&self, _: &[u64]) -> Paced<()> {
        unreachable!("a launch never deletes")
    }
    async fn set_subjects(&self, attr: u64, subjects: &[(u64, String)]) -> Paced<()> {
        assert_eq!(attr, ATTR);
        for (id, s) in subjects {
            *self.subject_writes.lock() += 1;
            self.subjects.lock().push((*id, s.clone()));
        }
        (Ok(()), RateInfo::default())
    }
    async fn subject_values(&self, _: u64) -> Result<Vec<(u64, String)>, ApiError> {
        unreachable!("a launch reads subjects with the customer")
    }
    async fn subject_attribute_id(&self, _: bool) -> Result<Option<u64>, ApiError> {
        Ok(Some(ATTR))
    }
    async fn customer_group_id(&self, _: &str, _: bool) -> Result<Option<u64>, ApiError> {
        Ok(Some(77))
    }
}

fn existing(channel_ids: Option<Vec<u64>>, group: u64) -> Customer {
    Customer {
        id: 9,
        email: "Ada@Corp.Example".into(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        customer_group_id: group,
        channel_ids,
        origin_channel_id: Some(1),
        attributes: Vec::new(),
    }
}

#[tokio::test]
async fn identity_without_email_is_a_clear_error() {
    let err = ensure_customer(&Fake::default(), &identity(None), &decision(None), &[1])
        .await
        .unwrap_err();
    assert_eq!(err, ApiError::MissingEmail);
}

#[tokio::test]
async fn no_channel_is_refused_before_any_call() {
    let fake = Fake::default();
    let err = ensure_customer(&fake, &identity(Some("a@x.example")), &decision(None), &[])
        .await
        .unwrap_err();
    assert_eq!(err, ApiError::NoChannels);
    assert!(fake.customers.lock().is_empty());
}

#[tokio::test]
async fn missing_customer_is_created_with_channels_group_and_subject() {
    let fake = Fake::default();
    let d = decision(Some(CustomerGroupRef::Name("Staff".into())));
    let id = ensure_customer(&fake, &identity(Some("ada@corp.example")), &d, &[3, 1, 3])
        .await
        .unwrap();
    let c = fake.customers.lock()[0].clone();
    assert_eq!(c.id, id);
    assert_eq!(
        (c.first_name.as_str(), c.last_name.as_str()),
        ("Ada", "Lovelace")
    );
    assert_eq!(c.channel_ids, Some(vec![1, 3]));
    assert_eq!(c.customer_group_id, 77);
    assert_eq!(
        *fake.subjects.lock(),
        vec![(id, "opentext:u-123".to_owned())]
    );
    assert_eq!(
        *fake.subject_writes.lock(),
        0,
        "the subject is set inline on create, without an extra call"
    );
}

#[tokio::test]
async fn existing_customer_found_case_insensitively_gets_channel_union() {
    let fake = Fake::default();
    fake.customers.lock().push(existing(Some(vec![2, 1]), 0));
    let id = ensure_customer(
        &fake,
        &identity(Some("ada@corp.example")),
        &decision(None),
        &[3],
    )
    .await
    .unwrap();
    assert_eq!(id, 9);
    assert_eq!(
        *fake.updates.lock(),
        vec![(
            9,
            CustomerUpdate {
                channel_ids: Some(vec![1, 2, 3]),
                customer_group_id: None
            }
        )]
    );
    // Created outside the gateway: adopted once, the subject recorded beside it.
    assert_eq!(
        *fake.subjects.lock(),
        vec![(9, "opentext:u-123".to_owned())]
    );
    assert_eq!(*fake.subject_writes.lock(), 1);
}

#[tokio::test]
async fn existing_customer_of_another_identity_is_refused_without_any_write() {
    let fake = Fake::default();
    fake.customers.lock().push(existing(Some(vec![1]), 0));
    fake.subjects
        .lock()
        .push((9, "opentext:someone-else".to_owned()));
    let err = ensure_customer(
        &fake,
        &identity(Some("ada@corp.example")),
        &decision(None),
        &[3],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        ApiError::SubjectConflict {
            customer_id: 9,
            recorded: "opentext:someone-else".into()
        }
    );
    assert!(
        fake.updates.lock().is_empty(),
        "no channel widened for a conflicting account"
    );
    assert_eq!(
        fake.subjects.lock().len(),
        1,
        "the recorded subject is not overwritten"
    );
}

/// Issue 10: a customer bound to nobody is not adopted on an address the IdP does not vouch for,
/// and nothing about it is changed.
#[tokio::test]
async fn unbound_customer_is_not_adopted_on_an_unverified_email_and_is_left_untouched() {
    let fake = Fake::default();
    fake.customers.lock().push(existing(Some(vec![1]), 0));
    let unverified = Identity {
        email_verified: false,
        ..identity(Some("ada@corp.example"))
    };
    let err = ensure_customer(&fake, &unverified, &decision(None), &[3])
        .await
        .unwrap_err();
    assert_eq!(err, ApiError::AdoptionNeedsVerifiedEmail { customer_id: 9 });
    assert!(fake.updates.lock().is_empty(), "no channel widened");
    assert!(fake.subjects.lock().is_empty(), "no subject recorded");
    assert_eq!(*fake.subject_writes.lock(), 0);
}

/// An unverified email still gets a new customer when none exists (nobody's account is taken),
/// and still reaches a customer already bound to this very identity.
#[tokio::test]
async fn an_unverified_email_still_creates_or_reaches_its_own_customer() {
    let unverified = Identity {
        email_verified: false,
        ..identity(Some("ada@corp.example"))
    };
    let fake = Fake::default();
    ensure_customer(&fake, &unverified, &decision(None), &[3])
        .await
        .unwrap();
    assert_eq!(fake.customers.lock().len(), 1);
    let fake = Fake::default();
    fake.customers.lock().push(existing(Some(vec![1, 3]), 0));
    fake.subjects.lock().push((9, "opentext:u-123".to_owned()));
    assert_eq!(
        ensure_customer(&fake, &unverified, &decision(None), &[3])
            .await
            .unwrap(),
        9
    );
}

#[tokio::test]
async fn existing_customer_with_our_subject_is_not_re_adopted() {
    let fake = Fake::default();
    fake.customers.lock().push(existing(Some(vec![1, 3]), 0));
    fake.subjects.lock().push((9, "opentext:u-123".to_owned()));
    ensure_customer(
        &fake,
        &identity(Some("ada@corp.example")),
        &decision(None),
        &[3],
    )
    .await
    .unwrap();
    assert_eq!(fake.subjects.lock().len(), 1);
    assert_eq!(*fake.subject_writes.lock(), 0);
    assert!(fake.updates.lock().is_empty());
}

#[tokio::test]
async fn existing_customer_in_line_is_not_written() {
    let fake = Fake::default();
    fake.customers.lock().push(existing(Some(vec![1, 3]), 5));
    let d = decision(Some(CustomerGroupRef::Id(5)));
    ensure_customer(&fake, &identity(Some("ada@corp.example")), &d, &[3])
        .await
        .unwrap();
    assert!(fake.updates.lock().is_empty());
}

#[tokio::test]
async fn customer_on_all_channels_is_not_restricted_but_group_is_moved() {
    let fake = Fake::default();
    fake.customers.lock().push(existing(None, 5));
    let d = decision(Some(CustomerGroupRef::Id(6)));
    ensure_customer(&fake, &identity(Some("ada@corp.example")), &d, &[3])
        .await
        .unwrap();
    assert_eq!(
        *fake.updates.lock(),
        vec![(
            9,
            CustomerUpdate {
                channel_ids: None,
                customer_group_id: Some(6)
            }
        )]
    );
}

#[test]
fn names_fall_back_to_display_name_then_email_local_part() {
    let mut id = identity(Some("grace.hopper@navy.example"));
    id.given_name = None;
    id.family_name = None;
    id.name = Some("Grace Brewster Hopper".into());
    assert_eq!(
        names(&id, "grace.hopper@navy.example"),
        ("Grace".into(), "Brewster Hopper".into())
    );
    id.name = None;
    assert_eq!(
        names(&id, "grace.hopper@navy.example"),
        ("grace.hopper".into(), "-".into())
    );
    id.given_name = Some("  ".into());
    id.family_name = Some("x".repeat(150));
    let (first, last) = names(&id, "grace.hopper@navy.example");
    assert_eq!(first, "grace.hopper");
    assert_eq!(last.len(), 100);
}

/// The launch audits what it wrote: a create, an adoption (with the channels it widened), an
/// update, and nothing when the customer was already in line.
#[tokio::test]
async fn the_launch_is_told_what_it_wrote() {
    let ada = identity(Some("ada@corp.example"));
    let fake = Fake::default();
    let created = ensure_customer_reporting(&fake, &ada, &decision(None), &[3])
        .await
        .unwrap();
    assert_eq!(created.change, Some(CustomerChange::Created));
    assert_eq!(
        created.change.as_ref().map(CustomerChange::reason),
        Some("create")
    );
    let again = ensure_customer_reporting(&fake, &ada, &decision(None), &[3])
        .await
        .unwrap();
    assert_eq!(
        again,
        Ensured {
            id: created.id,
            change: None
        }
    );
    let widened = ensure_customer_reporting(&fake, &ada, &decision(None), &[3, 4])
        .await
        .unwrap();
    let update = CustomerUpdate {
        channel_ids: Some(vec![3, 4]),
        customer_group_id: None,
    };
    assert_eq!(
        widened.change,
        Some(CustomerChange::Updated(update.clone()))
    );
    assert_eq!(
        widened.change.as_ref().map(CustomerChange::reason),
        Some("update")
    );

    let fake = Fake::default();
    fake.customers.lock().push(existing(Some(vec![1]), 0));
    let adopted = ensure_customer_reporting(&fake, &ada, &decision(None), &[1])
        .await
        .unwrap();
    assert_eq!(
        adopted.change,
        Some(CustomerChange::Adopted { update: None })
    );
    let fake = Fake::default();
    fake.customers.lock().push(existing(Some(vec![1]), 0));
    let adopted = ensure_customer_reporting(&fake, &ada, &decision(None), &[2])
        .await
        .unwrap();
    let change = adopted.change.expect("adopted");
    assert_eq!(change.reason(), "adopt");
    assert_eq!(
        change.update(),
        Some(&CustomerUpdate {
            channel_ids: Some(vec![1, 2]),
            customer_group_id: None
        })
    );
}
