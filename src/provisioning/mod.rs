//! Provisioning: the SCIM 2.0 service OpenText Identity Manager and Governance talk to, the desired
//! state it implies together with the policy, and the reconciler that drives BigCommerce there
//! through a durable, rate-limit-aware work queue.

pub mod b2b_sync;
pub mod bc;
pub mod executor;
pub mod queue;
pub mod reconcile;
pub mod retry;
pub mod run;
pub mod scim;
