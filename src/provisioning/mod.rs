//! Provisioning: the SCIM 2.0 service OpenText Identity Manager and Governance talk to, the desired
//! state it implies together with the policy, and the reconciler that drives BigCommerce there.

pub mod scim;
