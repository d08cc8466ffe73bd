//! BigCommerce webhooks (issue 13): BigCommerce's side of the story. What a delivery looks like,
//! which scopes storegate acts on, the record of storegate's own recent changes that tells an
//! external change from our own, and the `/v3/hooks` calls behind `storegate webhooks sync`.
//!
//! docs/bigcommerce.md ("Webhooks and logs"): hooks are registered with `POST /v3/hooks`
//! `{scope, destination (https, port 443), is_active, headers}`; a delivery is
//! `{scope, store_id, data{type,id}, hash, created_at, producer}`; BigCommerce retries for 48 h and
//! then deactivates the hook; "verify with your own secret header". The HTTP edge is
//! `web::webhooks`.

pub mod sync;

use serde::{Deserialize, Serialize};

use crate::bigcommerce::api::{ApiError, Created, Customer, Customers, Paced, StoreTime};
use crate::bigcommerce::b2b::{B2bApi, Company, CompanyUser};
use crate::clock::{SharedClock, UnixTime};
use crate::policy::B2bRole;
use crate::session::one_time::OneTimeStore;

/// The header BigCommerce sends back with every delivery: the hook's registered header.
pub const SECRET_HEADER: &str = "X-Storegate-Hook-Secret";

/// The largest delivery accepted: payloads carry ids only (a few hundred bytes).
pub const MAX_DELIVERY_BYTES: usize = 16 * 1024;

/// How long a delivery is remembered to drop its retries: BigCommerce retries for 48 hours,
/// plus an hour of margin.
pub const DEDUP_SECS: i64 = 49 * 3600;

/// A webhook is about one of our own writes when its `created_at` (store time) is within this
/// many seconds of the write (also in store time: our clock plus the store's measured offset).
/// The price: an edit made in the control panel within these seconds of our own write to the
/// same customer is taken for ours.
pub const OWN_CHANGE_TOLERANCE_SECS: i64 = 10;

/// How long our writes are remembered. A delivery of our own write that arrives later than
/// this (BigCommerce retrying for hours while the gateway was down) is reported as external: a
/// false alarm, never a missed change. Bounded so a large reconcile cannot fill the memory store.
pub const OWN_CHANGE_RECORD_SECS: i64 = 3600;

/// The most write times kept per customer.
const OWN_CHANGE_TIMES: usize = 16;

/// How long the receiver waits before calling a change external: our own write may answer
/// after BigCommerce has already sent the hook, and is recorded only then.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// The scopes storegate registers per account: every customer event (the wildcard covers
/// `store/customer/channel/login/access/updated`) and, with B2B Edition, company users.
pub fn wanted_scopes(b2b: bool) -> Vec<&'static str> {
    let mut s = vec!["store/customer/*"];
    if b2b {
        s.push("store/company/user/*");
    }
    s
}

/// One delivery, as BigCommerce sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct Delivery {
    pub scope: String,
    #[serde(default)]
    pub store_id: serde_json::Value,
    pub data: DeliveryData,
    #[serde(default)]
    pub hash: String,
    pub created_at: i64,
    pub producer: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeliveryData {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub id: u64,
}

/// What a delivery is about, when it is about something storegate manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A storefront customer (`store/customer/*`); `deleted` when it is gone.
    Customer { id: u64, deleted: bool },
    /// A B2B Edition company user (`store/company/user/*`).
    CompanyUser { id: u64 },
}

impl Subject {
    /// The key of the own-change record and of the coalescing window.
    pub fn key(&self, store_hash: &str) -> String {
        match self {
            Subject::Customer { id, .. } => format!("{store_hash}:customer:{id}"),
            Subject::CompanyUser { id } => format!("{store_hash}:company_user:{id}"),
        }
    }
}

/// The scopes a delivery may name to be acted on, exactly (docs/bigcommerce.md, "Webhooks"): the
/// customer events whose `data.id` is the customer's id, and B2B Edition's company-user events.
/// Any other scope, including other events under `store/customer/` (an address event's
/// `data.id` is the address's, not the customer's), is ignored.
pub const CUSTOMER_SCOPES: &[&str] = &[
    "store/customer/created",
    "store/customer/updated",
    "store/customer/deleted",
    "store/customer/channel/login/access/updated",
];
pub const COMPANY_USER_SCOPES: &[&str] = &[
    "store/company/user/created",
    "store/company/user/updated",
    "store/company/user/deleted",
];

impl Delivery {
    /// What this delivery is about, or `None` for a scope storegate does not act on.
    pub fn subject(&self) -> Option<Subject> {
        let id = self.data.id;
        let scope = self.scope.as_str();
        if CUSTOMER_SCOPES.contains(&scope) {
            return Some(Subject::Customer {
                id,
                deleted: scope == "store/customer/deleted",
            });
        }
        if COMPANY_USER_SCOPES.contains(&scope) {
            return Some(Subject::CompanyUser { id });
        }
        None
    }

    /// A stable reason code for the audit trail: `store/customer/updated` → `customer_updated`.
    pub fn reason_code(&self) -> String {
        self.scope
            .trim_start_matches("store/")
            .replace('/', "_")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<String>()
            .to_lowercase()
    }
}

/// Why the receiver refused a delivery (after the secret check): the HTTP status, the reason
/// code (the answer's body and the audit event's reason) and a detail for the audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
    pub detail: String,
}

/// A delivery the receiver goes on with: what it is about (`None`: a scope storegate does not
/// act on) and the key that drops its retries.
#[derive(Debug, Clone)]
pub struct Classified {
    pub delivery: Delivery,
    pub subject: Option<Subject>,
    pub dedup_key: String,
}

/// The receiver's body step, pure so it can be tested and fuzzed as the handler runs it: size,
/// shape, the producer naming this account's store, then the subject and the de-duplication key.
pub fn classify(account_id: &str, store_hash: &str, body: &[u8]) -> Result<Classified, Refusal> {
    if body.len() > MAX_DELIVERY_BYTES {
        return Err(Refusal {
            status: 413,
            reason: "webhook_too_large",
            detail: format!(
                "{} bytes; a delivery is at most {MAX_DELIVERY_BYTES}",
                body.len()
            ),
        });
    }
    let delivery: Delivery = serde_json::from_slice(body).map_err(|e| Refusal {
        status: 400,
        reason: "webhook_payload_invalid",
        detail: format!("not a BigCommerce webhook payload: {e}"),
    })?;
    // An empty store hash would make any `stores/` producer this store's.
    if store_hash.is_empty() || delivery.producer != format!("stores/{store_hash}") {
        return Err(Refusal {
            status: 400,
            reason: "webhook_wrong_store",
            detail: format!(
                "the delivery names producer {:?}, not this account's store",
                delivery.producer
            ),
        });
    }
    Ok(Classified {
        subject: delivery.subject(),
        dedup_key: dedup_key(account_id, body),
        delivery,
    })
}

/// Whether an event stamped `created_at` is within [`OWN_CHANGE_TOLERANCE_SECS`] of a write at
/// `write` (both store time). `abs_diff`: `created_at` comes from the payload, and a plain
/// difference of two i64 overflows (a panic in debug, and in release a wrapped `i64::MIN` whose
/// `abs()` is still negative, so any far-off stamp would pass as ours).
pub fn stamped_near(created_at: i64, write: i64) -> bool {
    created_at.abs_diff(write) <= OWN_CHANGE_TOLERANCE_SECS.unsigned_abs()
}

/// The de-duplication key of a delivery: BigCommerce sends a retry byte for byte again, so the
/// digest of the body identifies it (whatever `hash`, which covers `data` only, says).
pub fn dedup_key(account: &str, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("webhook:{account}:{digest}")
}

/// storegate's own recent changes to customers, shared by every replica through the one-time
/// store (Redis with several replicas). Launch and the reconciler record each customer they
/// write, before the write where the id is known, with the request id and bound subject of the
/// write ([`OwnWrite`]); the webhook receiver asks before it calls a change external, and names
/// the request that made an echoed change in its `webhook_echo` event.
#[derive(Clone)]
pub struct OwnChanges {
    store: OneTimeStore,
    clock: SharedClock,
    /// The stores' offsets from our clock, as the launch path measured them (none: 0).
    store_clock: Option<std::sync::Arc<crate::bigcommerce::store_clock::StoreClock>>,
}

impl std::fmt::Debug for OwnChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnChanges({:?})", self.store)
    }
}

impl OwnChanges {
    pub fn new(store: OneTimeStore, clock: SharedClock) -> Self {
        OwnChanges {
            store,
            clock,
            store_clock: None,
        }
    }

    /// Compares with webhook times in the store's time, using the offsets `store_clock` measures.
    pub fn with_store_clock(
        mut self,
        store_clock: std::sync::Arc<crate::bigcommerce::store_clock::StoreClock>,
    ) -> Self {
        self.store_clock = Some(store_clock);
        self
    }

    fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Our clock in the store's time (the offset last measured; 0 when never measured).
    fn store_now(&self, store_hash: &str) -> UnixTime {
        let offset = self
            .store_clock
            .as_ref()
            .and_then(|c| c.offset(store_hash))
            .unwrap_or(0);
        self.now().saturating_add(offset)
    }

    /// Records that storegate is changing (or just changed) a customer. Never fails the caller:
    /// a lost record costs one spurious `external_change`, logged here.
    pub async fn record_customer(&self, store_hash: &str, customer_id: u64) {
        self.record(
            store_hash,
            &Subject::Customer {
                id: customer_id,
                deleted: false,
            },
        )
        .await
    }

    /// Records that storegate is changing a B2B company user.
    pub async fn record_company_user(&self, store_hash: &str, user_id: u64) {
        self.record(store_hash, &Subject::CompanyUser { id: user_id })
            .await
    }

    /// Adds this write (its store time, and the request id and bound subject of the task's
    /// correlation context) to the subject's recent writes. Read-modify-write: two replicas
    /// writing the same customer in the same instant may keep only one of the two, which is
    /// within the tolerance of the other anyway.
    async fn record(&self, store_hash: &str, subject: &Subject) {
        let key = format!("own:{}", subject.key(store_hash));
        let now = self.now();
        let write = OwnWrite::in_context(self.store_now(store_hash));
        let result = async {
            let writes = parse_writes(self.store.get(&key, now).await?.as_deref());
            let value = serde_json::to_string(&add_write(writes, write))
                .map_err(|e| format!("cannot encode the own-change record: {e}"))?;
            self.store
                .set(&key, &value, now + OWN_CHANGE_RECORD_SECS, now)
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record an own change; its webhook will be reported as an external change");
        }
    }

    /// Whether an event BigCommerce stamped `created_at` (store time) about this subject is
    /// one of our recorded writes.
    pub async fn is_own(
        &self,
        store_hash: &str,
        subject: &Subject,
        created_at: i64,
    ) -> Result<bool, String> {
        Ok(self
            .own_write(store_hash, subject, created_at)
            .await?
            .is_some())
    }

    /// The recorded write of ours an event BigCommerce stamped `created_at` (store time) about
    /// this subject echoes, if any (see [`matching_write`]).
    pub async fn own_write(
        &self,
        store_hash: &str,
        subject: &Subject,
        created_at: i64,
    ) -> Result<Option<OwnWrite>, String> {
        let key = format!("own:{}", subject.key(store_hash));
        let writes = parse_writes(self.store.get(&key, self.now()).await?.as_deref());
        Ok(matching_write(&writes, created_at).cloned())
    }

    /// The first delivery about a subject within the settle window gets `true`; later ones
    /// (BigCommerce sends `updated` and `channel/login/access/updated` for one edit) are folded
    /// into it, so one edit is one `external_change`.
    pub async fn open_window(&self, store_hash: &str, subject: &Subject) -> Result<bool, String> {
        let now = self.now();
        let until = now + i64::try_from(SETTLE.as_secs()).unwrap_or(2) + 1;
        self.store
            .put_nx(
                &format!("hook-window:{}", subject.key(store_hash)),
                "1",
                until,
                now,
            )
            .await
    }

    /// Claims a delivery's de-duplication key: `false` for a retry already seen.
    pub async fn first_delivery(&self, key: &str) -> Result<bool, String> {
        let now = self.now();
        self.store.claim(key, now + DEDUP_SECS, now).await
    }
}

/// One of storegate's own writes to a customer or company user, as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnWrite {
    /// When, in the store's time.
    pub at: i64,
    /// The request id (correlation id) of the request that made the write: a launch's, or a
    /// reconcile pass's `reconcile-{run}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The bound subject (`idp:subject`) the write was made for, when the writer said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl OwnWrite {
    /// A write at `at` (store time) in this task's correlation context
    /// ([`crate::audit::correlation`]).
    fn in_context(at: i64) -> Self {
        OwnWrite {
            at,
            request_id: crate::audit::correlation::current().filter(|r| !r.is_empty()),
            subject: crate::audit::correlation::subject(),
        }
    }
}

/// The record's value: a JSON list of writes. A value written before correlation ids were kept
/// (comma-separated store times) still reads, as writes without request id or subject, so a
/// rolling upgrade does not turn in-flight echoes into external changes.
fn parse_writes(v: Option<&str>) -> Vec<OwnWrite> {
    let v = v.unwrap_or("").trim();
    if v.starts_with('[') {
        return serde_json::from_str(v).unwrap_or_default();
    }
    v.split(',')
        .filter_map(|t| t.parse().ok())
        .map(|at| OwnWrite {
            at,
            request_id: None,
            subject: None,
        })
        .collect()
}

/// `writes` with `new` added: writes older than [`OWN_CHANGE_RECORD_SECS`] before it are
/// dropped, and at most [`OWN_CHANGE_TIMES`] of the newest are kept.
fn add_write(mut writes: Vec<OwnWrite>, new: OwnWrite) -> Vec<OwnWrite> {
    writes.retain(|w| new.at.saturating_sub(w.at) < OWN_CHANGE_RECORD_SECS);
    writes.push(new);
    let skip = writes.len().saturating_sub(OWN_CHANGE_TIMES);
    writes.split_off(skip)
}

/// The write an event stamped `created_at` echoes: the one nearest in time within
/// [`OWN_CHANGE_TOLERANCE_SECS`] (the later one on a tie: the newer request made the state
/// BigCommerce reports).
pub fn matching_write(writes: &[OwnWrite], created_at: i64) -> Option<&OwnWrite> {
    writes
        .iter()
        .filter(|w| stamped_near(created_at, w.at))
        .min_by_key(|w| (created_at.abs_diff(w.at), std::cmp::Reverse(w.at)))
}

/// A customer client (the launch path's or the reconciler's), recording every customer it
/// writes in [`OwnChanges`]: before the write when the id is known, so the hook cannot overtake
/// the record; a created customer once its id is known.
pub struct RecordingCustomers {
    inner: std::sync::Arc<dyn Customers>,
    own: OwnChanges,
}

impl RecordingCustomers {
    pub fn wrap(
        inner: std::sync::Arc<dyn Customers>,
        own: OwnChanges,
    ) -> std::sync::Arc<dyn Customers> {
        std::sync::Arc::new(RecordingCustomers { inner, own })
    }

    async fn record(&self, ids: Vec<u64>) {
        for id in ids {
            self.own.record_customer(self.inner.store_hash(), id).await;
        }
    }
}

#[async_trait::async_trait]
impl StoreTime for RecordingCustomers {
    async fn store_time(&self) -> Result<UnixTime, ApiError> {
        self.inner.store_time().await
    }
}

#[async_trait::async_trait]
impl Customers for RecordingCustomers {
    fn store_hash(&self) -> &str {
        self.inner.store_hash()
    }

    async fn find_by_emails(&self, emails: &[String]) -> Paced<Vec<Customer>> {
        self.inner.find_by_emails(emails).await
    }

    async fn find_by_ids(&self, ids: &[u64]) -> Result<Vec<Customer>, ApiError> {
        self.inner.find_by_ids(ids).await
    }

    async fn create(&self, customers: &[serde_json::Value]) -> Paced<Created> {
        let (r, rate) = self.inner.create(customers).await;
        if let Ok(Created::All(created)) = &r {
            self.record(created.iter().map(|c| c.id).collect()).await;
        }
        (r, rate)
    }

    async fn update(&self, updates: &[serde_json::Value]) -> Paced<Vec<Customer>> {
        self.record(
            updates
                .iter()
                .filter_map(|u| u.get("id").and_then(serde_json::Value::as_u64))
                .collect(),
        )
        .await;
        self.inner.update(updates).await
    }

    async fn delete(&self, ids: &[u64]) -> Paced<()> {
        self.record(ids.to_vec()).await;
        self.inner.delete(ids).await
    }

    async fn set_subjects(&self, attribute_id: u64, subjects: &[(u64, String)]) -> Paced<()> {
        self.record(subjects.iter().map(|(id, _)| *id).collect())
            .await;
        self.inner.set_subjects(attribute_id, subjects).await
    }

    async fn subject_values(&self, attribute_id: u64) -> Result<Vec<(u64, String)>, ApiError> {
        self.inner.subject_values(attribute_id).await
    }

    async fn subject_attribute_id(&self, create: bool) -> Result<Option<u64>, ApiError> {
        self.inner.subject_attribute_id(create).await
    }

    async fn customer_group_id(&self, name: &str, create: bool) -> Result<Option<u64>, ApiError> {
        self.inner.customer_group_id(name, create).await
    }
}

/// A B2B Edition client recording every company user it writes in [`OwnChanges`].
pub struct RecordingB2bApi {
    pub inner: std::sync::Arc<dyn B2bApi>,
    pub store_hash: String,
    pub own: OwnChanges,
}

impl RecordingB2bApi {
    /// Wraps every client of `clients` (account id -> client) with its account's store hash.
    pub fn wrap_all(
        clients: &mut std::collections::HashMap<String, std::sync::Arc<dyn B2bApi>>,
        config: &crate::config::Config,
        own: &OwnChanges,
    ) {
        for (account, client) in clients.iter_mut() {
            let Some(a) = config.account(account) else {
                continue;
            };
            *client = std::sync::Arc::new(RecordingB2bApi {
                inner: client.clone(),
                store_hash: a.store_hash.clone(),
                own: own.clone(),
            });
        }
    }
}

#[async_trait::async_trait]
impl B2bApi for RecordingB2bApi {
    async fn company(&self, company_id: u64) -> Result<Option<Company>, ApiError> {
        self.inner.company(company_id).await
    }

    async fn user_by_customer(&self, customer_id: u64) -> Result<Option<CompanyUser>, ApiError> {
        self.inner.user_by_customer(customer_id).await
    }

    async fn create_user(
        &self,
        company_id: u64,
        identity: &crate::identity::Identity,
        role: B2bRole,
    ) -> Result<u64, ApiError> {
        let id = self.inner.create_user(company_id, identity, role).await?;
        self.own.record_company_user(&self.store_hash, id).await;
        Ok(id)
    }

    async fn set_role(&self, user_id: u64, role: B2bRole) -> Result<(), ApiError> {
        self.own
            .record_company_user(&self.store_hash, user_id)
            .await;
        self.inner.set_role(user_id, role).await
    }

    async fn company_users(
        &self,
        company_id: u64,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<CompanyUser>, u64), ApiError> {
        self.inner.company_users(company_id, offset, limit).await
    }

    async fn delete_user(&self, user_id: u64) -> Result<(), ApiError> {
        self.own
            .record_company_user(&self.store_hash, user_id)
            .await;
        self.inner.delete_user(user_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(scope: &str) -> Delivery {
        serde_json::from_value(serde_json::json!({
            "scope": scope, "store_id": "1025646", "data": {"type": "customer", "id": 7},
            "hash": "x", "created_at": 1_700_000_000, "producer": "stores/abc"
        }))
        .unwrap()
    }

    #[test]
    fn customer_and_company_user_scopes_are_acted_on_others_ignored() {
        assert_eq!(
            delivery("store/customer/updated").subject(),
            Some(Subject::Customer {
                id: 7,
                deleted: false
            })
        );
        assert_eq!(
            delivery("store/customer/deleted").subject(),
            Some(Subject::Customer {
                id: 7,
                deleted: true
            })
        );
        assert_eq!(
            delivery("store/customer/channel/login/access/updated").subject(),
            Some(Subject::Customer {
                id: 7,
                deleted: false
            })
        );
        assert_eq!(
            delivery("store/company/user/created").subject(),
            Some(Subject::CompanyUser { id: 7 })
        );
        assert_eq!(delivery("store/company/updated").subject(), None);
        assert_eq!(delivery("store/order/created").subject(), None);
        assert_eq!(
            delivery("store/customer/channel/login/access/updated").reason_code(),
            "customer_channel_login_access_updated"
        );
    }

    fn body(scope: &str, producer: &str, created_at: i64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "scope": scope, "store_id": "1025646", "data": {"type": "customer", "id": 7},
            "hash": "x", "created_at": created_at, "producer": producer
        }))
        .unwrap()
    }

    /// The seeds of tests/fuzz/corpus/webhook_payload with an exact refusal each.
    #[test]
    fn classify_refuses_another_store_a_bad_shape_and_an_oversized_body() {
        let wrong = classify(
            "main",
            "abc",
            &body("store/customer/updated", "stores/def", 1),
        )
        .unwrap_err();
        assert_eq!((wrong.status, wrong.reason), (400, "webhook_wrong_store"));
        // A prefix of the store hash, or an empty configured hash, is not the store.
        for (hash, producer) in [
            ("abc", "stores/ab"),
            ("abc", "stores/abcd"),
            ("", "stores/"),
        ] {
            let r =
                classify("main", hash, &body("store/customer/updated", producer, 1)).unwrap_err();
            assert_eq!(
                (r.status, r.reason),
                (400, "webhook_wrong_store"),
                "{hash} {producer}"
            );
        }
        for bad in [&b"{}"[..], b"[]", b"{\"scope\":\"store/customer/updated\",\"producer\":\"stores/abc\",\"created_at\":1,\"data\":{\"id\":-7}}"] {
            let r = classify("main", "abc", bad).unwrap_err();
            assert_eq!((r.status, r.reason), (400, "webhook_payload_invalid"));
        }
        let big = vec![b' '; MAX_DELIVERY_BYTES + 1];
        let r = classify("main", "abc", &big).unwrap_err();
        assert_eq!((r.status, r.reason), (413, "webhook_too_large"));
    }

    #[test]
    fn classify_acts_only_on_the_documented_scopes() {
        let ok = classify(
            "main",
            "abc",
            &body("store/customer/updated", "stores/abc", 1),
        )
        .unwrap();
        assert_eq!(
            ok.subject,
            Some(Subject::Customer {
                id: 7,
                deleted: false
            })
        );
        let raw = body("store/customer/updated", "stores/abc", 1);
        assert_eq!(ok.dedup_key, dedup_key("main", &raw));
        // An address event's data.id is the address's: never taken for a customer; nor any
        // other scope that only starts like one of ours.
        for scope in [
            "store/customer/address/updated",
            "store/customer/",
            "store/customer/deleted/x",
            "store/customer/updated ",
            "store/company/user/",
            "store/company/updated",
            "STORE/CUSTOMER/UPDATED",
        ] {
            let c = classify("main", "abc", &body(scope, "stores/abc", 1)).unwrap();
            assert_eq!(c.subject, None, "{scope}");
        }
    }

    /// `created_at` is the sender's: the extremes neither panic nor pass for our own write.
    #[test]
    fn a_far_off_created_at_is_never_near_our_write() {
        assert!(stamped_near(1_000, 1_010) && stamped_near(1_010, 1_000));
        assert!(!stamped_near(1_000, 1_011));
        assert!(!stamped_near(i64::MIN, 1_000));
        assert!(!stamped_near(i64::MIN + 1_000, 1_000));
        assert!(!stamped_near(i64::MAX, -1));
        assert!(stamped_near(i64::MIN, i64::MIN + 10));
    }

    /// An event is ours when BigCommerce stamped it within the tolerance of one of our writes
    /// to that customer on that store; an edit a little later is not, even while we remember
    /// the write; a late retry of our own event is ours until the record expires.
    #[tokio::test]
    async fn own_change_matches_events_stamped_near_our_write_only() {
        let clock = crate::clock::ManualClock::at(1_000);
        let own = OwnChanges::new(OneTimeStore::memory(), std::sync::Arc::new(clock.clone()));
        let c = Subject::Customer {
            id: 5,
            deleted: false,
        };
        let tol = OWN_CHANGE_TOLERANCE_SECS;
        assert!(!own.is_own("abc", &c, 1_000).await.unwrap());
        own.record_customer("abc", 5).await;
        assert!(own.is_own("abc", &c, 1_000).await.unwrap());
        assert!(own.is_own("abc", &c, 1_000 + tol).await.unwrap());
        assert!(own.is_own("abc", &c, 1_000 - tol).await.unwrap());
        assert!(!own.is_own("abc", &c, 1_000 + tol + 1).await.unwrap());
        assert!(!own.is_own("other", &c, 1_000).await.unwrap());
        let other = Subject::Customer {
            id: 6,
            deleted: false,
        };
        assert!(!own.is_own("abc", &other, 1_000).await.unwrap());
        // A second write later: both are remembered.
        clock.set(1_100);
        own.record_customer("abc", 5).await;
        assert!(own.is_own("abc", &c, 1_000).await.unwrap());
        assert!(own.is_own("abc", &c, 1_100).await.unwrap());
        assert!(!own.is_own("abc", &c, 1_050).await.unwrap());
        clock.set(1_100 + OWN_CHANGE_RECORD_SECS);
        assert!(!own.is_own("abc", &c, 1_100).await.unwrap());
    }

    /// A write records the request id and bound subject of the task it runs in, and the echo
    /// finds that write; a write outside any request records neither.
    #[tokio::test]
    async fn a_write_keeps_its_request_id_and_subject_for_the_echo() {
        use crate::audit::correlation;
        let clock = crate::clock::ManualClock::at(1_000);
        let own = OwnChanges::new(OneTimeStore::memory(), std::sync::Arc::new(clock.clone()));
        let c = Subject::Customer {
            id: 5,
            deleted: false,
        };
        correlation::scope(
            "req-1".into(),
            correlation::on_behalf_of("nam:ada".into(), own.record_customer("abc", 5)),
        )
        .await;
        clock.set(1_100);
        own.record_customer("abc", 5).await;
        let first = own.own_write("abc", &c, 1_003).await.unwrap();
        assert_eq!(
            first,
            Some(OwnWrite {
                at: 1_000,
                request_id: Some("req-1".into()),
                subject: Some("nam:ada".into())
            })
        );
        let second = own.own_write("abc", &c, 1_100).await.unwrap();
        assert_eq!(
            second,
            Some(OwnWrite {
                at: 1_100,
                request_id: None,
                subject: None
            })
        );
        assert_eq!(own.own_write("abc", &c, 1_050).await.unwrap(), None);
    }

    #[test]
    fn the_nearest_write_is_the_echoed_one_and_old_records_still_read() {
        let w = |at, rid: &str| OwnWrite {
            at,
            request_id: Some(rid.into()),
            subject: None,
        };
        let writes = vec![w(100, "a"), w(106, "b"), w(112, "c")];
        assert_eq!(matching_write(&writes, 104).map(|w| w.at), Some(106));
        assert_eq!(
            matching_write(&writes, 109).map(|w| w.at),
            Some(112),
            "tie: the newer"
        );
        assert_eq!(matching_write(&writes, 89).map(|w| w.at), None);
        assert_eq!(matching_write(&writes, 90).map(|w| w.at), Some(100));
        // The comma-separated record of earlier versions.
        assert_eq!(
            parse_writes(Some("100,106")),
            vec![
                OwnWrite {
                    at: 100,
                    request_id: None,
                    subject: None
                },
                OwnWrite {
                    at: 106,
                    request_id: None,
                    subject: None
                }
            ]
        );
        assert_eq!(parse_writes(Some("[not json")), vec![]);
        assert_eq!(parse_writes(None), vec![]);
        // Old writes fall out; at most OWN_CHANGE_TIMES are kept, the newest.
        let many: Vec<OwnWrite> = (0..20).map(|i| w(5_000 + i, "x")).collect();
        let kept = add_write(many, w(5_020, "y"));
        assert_eq!(kept.len(), OWN_CHANGE_TIMES);
        assert_eq!(kept.first().map(|w| w.at), Some(5_005));
        let kept = add_write(vec![w(1, "old")], w(1 + OWN_CHANGE_RECORD_SECS, "new"));
        assert_eq!(kept, vec![w(1 + OWN_CHANGE_RECORD_SECS, "new")]);
    }

    #[tokio::test]
    async fn a_retry_is_a_duplicate_and_another_body_is_not() {
        let clock = crate::clock::ManualClock::at(1_000);
        let own = OwnChanges::new(OneTimeStore::memory(), std::sync::Arc::new(clock));
        let a = dedup_key("main", b"{\"a\":1}");
        assert!(own.first_delivery(&a).await.unwrap());
        assert!(!own.first_delivery(&a).await.unwrap());
        assert!(
            own.first_delivery(&dedup_key("main", b"{\"a\":2}"))
                .await
                .unwrap()
        );
        assert!(
            own.first_delivery(&dedup_key("outlet", b"{\"a\":1}"))
                .await
                .unwrap()
        );
    }
}
