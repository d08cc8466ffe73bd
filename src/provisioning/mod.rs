//! Provisioning: the SCIM 2.0 service OpenText Identity Manager and Governance talk to, the desired
//! state it implies together with the policy, and the reconciler that drives BigCommerce there
//! through a durable, rate-limit-aware work queue. The journey that strings these steps together
//! (timer, pass, B2B step) reads top to bottom in [`crate::flows::provision`].

pub mod b2b_sync;
pub mod drift;
pub mod executor;
pub mod observe;
pub mod queue;
pub mod reconcile;
pub mod render;
pub mod retry;
pub mod scim;
