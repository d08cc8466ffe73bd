//! The metering layer around a [`CustomerApi`]: every call of the client it wraps is timed into
//! the `bigcommerce` latency histogram (labels: account, call, result) inside a `bigcommerce`
//! tracing span. The client knows nothing of metrics; the composition root stacks this layer on.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus::HistogramVec;
use tracing::Instrument;

use super::api::{ApiError, Customer, CustomerApi, CustomerUpdate, NewCustomer, StoreTime};
use crate::clock::UnixTime;
use crate::policy::CustomerGroupRef;

/// A `CustomerApi` that times every call of the one it wraps, inside a `bigcommerce` span.
pub struct MeteredCustomerApi {
    inner: Arc<dyn CustomerApi>,
    account: String,
    histogram: HistogramVec,
}

impl MeteredCustomerApi {
    /// `inner`, with each call's latency recorded under `account` in `histogram`.
    pub fn wrap(
        account: &str,
        inner: Arc<dyn CustomerApi>,
        histogram: HistogramVec,
    ) -> Arc<dyn CustomerApi> {
        Arc::new(MeteredCustomerApi {
            inner,
            account: account.to_owned(),
            histogram,
        })
    }

    /// The call's span (a child of the request's; exported with `[telemetry]`): the account id
    /// and the call name only, the same values as the metric labels, never an argument.
    fn span(&self, call: &'static str) -> tracing::Span {
        tracing::info_span!("bigcommerce", account = %self.account, call)
    }

    fn record<T>(&self, call: &str, since: Instant, r: &Result<T, ApiError>) {
        let result = match r {
            Ok(_) => "ok",
            Err(ApiError::Unreachable { .. } | ApiError::Timeout { .. }) => "unreachable",
            Err(ApiError::RateLimited { .. }) => "rate_limited",
            Err(_) => "error",
        };
        self.histogram
            .with_label_values(&[self.account.as_str(), call, result])
            .observe(since.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl StoreTime for MeteredCustomerApi {
    async fn store_time(&self) -> Result<UnixTime, ApiError> {
        let t = Instant::now();
        let r = self
            .inner
            .store_time()
            .instrument(self.span("store_time"))
            .await;
        self.record("store_time", t, &r);
        r
    }
}

#[async_trait]
impl CustomerApi for MeteredCustomerApi {
    fn store_hash(&self) -> &str {
        self.inner.store_hash()
    }

    async fn find_customer_by_email(&self, email: &str) -> Result<Option<Customer>, ApiError> {
        let t = Instant::now();
        let r = self
            .inner
            .find_customer_by_email(email)
            .instrument(self.span("find_customer"))
            .await;
        self.record("find_customer", t, &r);
        r
    }

    async fn create_customer(&self, customer: NewCustomer) -> Result<Customer, ApiError> {
        let t = Instant::now();
        let r = self
            .inner
            .create_customer(customer)
            .instrument(self.span("create_customer"))
            .await;
        self.record("create_customer", t, &r);
        r
    }

    async fn update_customer(&self, id: u64, update: CustomerUpdate) -> Result<(), ApiError> {
        let t = Instant::now();
        let r = self
            .inner
            .update_customer(id, update)
            .instrument(self.span("update_customer"))
            .await;
        self.record("update_customer", t, &r);
        r
    }

    async fn customer_group_id(&self, group: &CustomerGroupRef) -> Result<u64, ApiError> {
        let t = Instant::now();
        let r = self
            .inner
            .customer_group_id(group)
            .instrument(self.span("customer_group"))
            .await;
        self.record("customer_group", t, &r);
        r
    }

    async fn subject_attribute_id(&self) -> Result<u64, ApiError> {
        let t = Instant::now();
        let r = self
            .inner
            .subject_attribute_id()
            .instrument(self.span("subject_attribute"))
            .await;
        self.record("subject_attribute", t, &r);
        r
    }

    async fn set_subject(
        &self,
        customer_id: u64,
        attribute_id: u64,
        idp_subject: &str,
    ) -> Result<(), ApiError> {
        let t = Instant::now();
        let r = self
            .inner
            .set_subject(customer_id, attribute_id, idp_subject)
            .instrument(self.span("set_subject"))
            .await;
        self.record("set_subject", t, &r);
        r
    }
}
