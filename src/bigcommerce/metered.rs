//! The metering layer around a [`Customers`]: every call of the client it wraps is timed into
//! the `bigcommerce` latency histogram (labels: account, call, result) inside a `bigcommerce`
//! tracing span. One observation per call, retries and find-or-create's two requests included
//! (the layer sits outside the quick retry). The client knows nothing of metrics; the
//! composition root stacks this layer on, for the launch path and for the reconciler.
//!
//! The `call` label keeps the launch's names (`find_customer`, `create_customer`, ...); the
//! reconciler's batch calls have names of their own (`find_customers`, `create_customers`, ...)
//! so a launch's latency is never averaged with a ten-customer batch's.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus::HistogramVec;
use serde_json::Value;
use tracing::Instrument;

use super::api::{ApiError, Created, Customer, Customers, Paced, StoreTime};
use crate::clock::UnixTime;

/// Whose calls a layer times, which decides the `call` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The launch path: one customer a call.
    Launch,
    /// The reconciler: batches.
    Reconciler,
}

/// The operations of [`Customers`], named for the `call` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StoreTime,
    FindByEmails,
    FindByIds,
    Create,
    Update,
    Delete,
    SetSubjects,
    SubjectValues,
    SubjectAttribute,
    CustomerGroup,
}

impl Op {
    /// The `call` label value (docs/operations.md lists them).
    fn label(self, caller: Caller) -> &'static str {
        match (self, caller) {
            (Op::StoreTime, _) => "store_time",
            (Op::FindByEmails, Caller::Launch) => "find_customer",
            (Op::FindByEmails, Caller::Reconciler) => "find_customers",
            (Op::FindByIds, _) => "find_customers_by_id",
            (Op::Create, Caller::Launch) => "create_customer",
            (Op::Create, Caller::Reconciler) => "create_customers",
            (Op::Update, Caller::Launch) => "update_customer",
            (Op::Update, Caller::Reconciler) => "update_customers",
            (Op::Delete, _) => "delete_customers",
            (Op::SetSubjects, Caller::Launch) => "set_subject",
            (Op::SetSubjects, Caller::Reconciler) => "set_subjects",
            (Op::SubjectValues, _) => "subject_values",
            (Op::SubjectAttribute, Caller::Launch) => "subject_attribute",
            (Op::SubjectAttribute, Caller::Reconciler) => "reconcile_subject_attribute",
            (Op::CustomerGroup, Caller::Launch) => "customer_group",
            (Op::CustomerGroup, Caller::Reconciler) => "reconcile_customer_group",
        }
    }
}

/// A `Customers` that times every call of the one it wraps, inside a `bigcommerce` span.
pub struct MeteredCustomers {
    inner: Arc<dyn Customers>,
    account: String,
    caller: Caller,
    histogram: HistogramVec,
}

impl MeteredCustomers {
    /// `inner`, with each call's latency recorded under `account` in `histogram`, the `call`
    /// label named for `caller`.
    pub fn wrap(
        account: &str,
        caller: Caller,
        inner: Arc<dyn Customers>,
        histogram: HistogramVec,
    ) -> Arc<dyn Customers> {
        Arc::new(MeteredCustomers {
            inner,
            account: account.to_owned(),
            caller,
            histogram,
        })
    }

    /// Times `call` as `op`. The span (a child of the request's; exported with `[telemetry]`)
    /// carries the account id and the call name only, the metric's labels, never an argument.
    async fn timed<T>(&self, op: Op, call: impl Future<Output = Paced<T>>) -> Paced<T> {
        let name = op.label(self.caller);
        let span = tracing::info_span!("bigcommerce", account = %self.account, call = name);
        let since = Instant::now();
        let (r, rate) = call.instrument(span).await;
        let result = match &r {
            Ok(_) => "ok",
            Err(ApiError::Unreachable { .. } | ApiError::Timeout { .. }) => "unreachable",
            Err(ApiError::RateLimited { .. }) => "rate_limited",
            Err(_) => "error",
        };
        self.histogram
            .with_label_values(&[self.account.as_str(), name, result])
            .observe(since.elapsed().as_secs_f64());
        (r, rate)
    }

    /// [`Self::timed`] for a call that returns no rate-limit headers.
    async fn plain<T>(
        &self,
        op: Op,
        call: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        self.timed(op, async { (call.await, Default::default()) })
            .await
            .0
    }
}

#[async_trait]
impl StoreTime for MeteredCustomers {
    async fn store_time(&self) -> Result<UnixTime, ApiError> {
        self.plain(Op::StoreTime, self.inner.store_time()).await
    }
}

#[async_trait]
impl Customers for MeteredCustomers {
    fn store_hash(&self) -> &str {
        self.inner.store_hash()
    }

    async fn find_by_emails(&self, emails: &[String]) -> Paced<Vec<Customer>> {
        self.timed(Op::FindByEmails, self.inner.find_by_emails(emails))
            .await
    }

    async fn find_by_ids(&self, ids: &[u64]) -> Result<Vec<Customer>, ApiError> {
        self.plain(Op::FindByIds, self.inner.find_by_ids(ids)).await
    }

    async fn create(&self, customers: &[Value]) -> Paced<Created> {
        self.timed(Op::Create, self.inner.create(customers)).await
    }

    async fn update(&self, updates: &[Value]) -> Paced<Vec<Customer>> {
        self.timed(Op::Update, self.inner.update(updates)).await
    }

    async fn delete(&self, ids: &[u64]) -> Paced<()> {
        self.timed(Op::Delete, self.inner.delete(ids)).await
    }

    async fn set_subjects(&self, attribute_id: u64, subjects: &[(u64, String)]) -> Paced<()> {
        self.timed(
            Op::SetSubjects,
            self.inner.set_subjects(attribute_id, subjects),
        )
        .await
    }

    async fn subject_values(&self, attribute_id: u64) -> Result<Vec<(u64, String)>, ApiError> {
        self.plain(Op::SubjectValues, self.inner.subject_values(attribute_id))
            .await
    }

    async fn subject_attribute_id(&self, create: bool) -> Result<Option<u64>, ApiError> {
        self.plain(
            Op::SubjectAttribute,
            self.inner.subject_attribute_id(create),
        )
        .await
    }

    async fn customer_group_id(&self, name: &str, create: bool) -> Result<Option<u64>, ApiError> {
        self.plain(
            Op::CustomerGroup,
            self.inner.customer_group_id(name, create),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bigcommerce::test_support::Scripted;

    fn histogram() -> HistogramVec {
        HistogramVec::new(
            prometheus::HistogramOpts::new("t", "t"),
            &["account", "call", "result"],
        )
        .expect("valid histogram")
    }

    fn count(h: &HistogramVec, call: &str, result: &str) -> u64 {
        h.with_label_values(&["main", call, result])
            .get_sample_count()
    }

    #[tokio::test]
    async fn the_reconcilers_batch_calls_are_recorded_under_their_own_names() {
        let h = histogram();
        let fake = Arc::new(Scripted::new(vec![
            Ok(()),
            Err(ApiError::RateLimited { retry_after_ms: 9 }),
            Ok(()),
        ]));
        let api = MeteredCustomers::wrap("main", Caller::Reconciler, fake, h.clone());
        let emails: Vec<String> = (0..10).map(|i| format!("u{i}@corp.example")).collect();
        let _ = api.find_by_emails(&emails).await;
        let _ = api.create(&[Value::Null, Value::Null]).await;
        let _ = api.delete(&[1, 2, 3]).await;
        assert_eq!(count(&h, "find_customers", "ok"), 1);
        assert_eq!(count(&h, "create_customers", "rate_limited"), 1);
        assert_eq!(count(&h, "delete_customers", "ok"), 1);
        // Never under the launch's names.
        assert_eq!(count(&h, "find_customer", "ok"), 0);
        assert_eq!(count(&h, "create_customer", "rate_limited"), 0);
    }

    #[tokio::test]
    async fn the_launchs_calls_keep_their_names_one_observation_per_call() {
        let h = histogram();
        let fake = Arc::new(Scripted::new(vec![Err(ApiError::Rejected {
            status: 503,
            message: "down".into(),
        })]));
        // Outside the quick retry: the retried call is one observation.
        let retried = crate::bigcommerce::quick_retry::QuickRetry::wrap(
            fake.clone(),
            crate::bigcommerce::quick_retry::RetryPolicy {
                max_rate_limit_wait: std::time::Duration::ZERO,
                default_rate_limit_wait: std::time::Duration::ZERO,
                server_error_backoff: std::time::Duration::ZERO,
            },
        );
        let api = MeteredCustomers::wrap("main", Caller::Launch, retried, h.clone());
        super::super::api::one::find_customer_by_email(api.as_ref(), "a@corp.example")
            .await
            .expect("found none after the retry");
        assert_eq!(fake.calls(), 2);
        assert_eq!(count(&h, "find_customer", "ok"), 1);
        assert_eq!(count(&h, "find_customer", "error"), 0);
        assert_eq!(count(&h, "find_customers", "ok"), 0);
    }
}
