//! Control-panel users (issue 12): the staff who manage the stores, provisioned through the
//! GraphQL Account API from SCIM and the policy, joiner to leaver, within BigCommerce's budget of
//! 70 requests per hour per account.
//!
//! One module per step, the core pure:
//! - [`desired`]: SCIM people + the policy's control-panel grants -> who should be in which store
//!   with which permission set ([`model::DesiredStaffState`]);
//! - [`observe`]: the account's users and each store's users with their permissions, read in large
//!   pages (each page spends a call of the budget);
//! - [`plan`] (pure): desired vs observed -> ordered steps: leavers' removals, movers' removals,
//!   then additions; people outside SCIM's population are unmanaged and only listed;
//! - [`budget`]: the hourly budget per account shared by every replica (Redis) or kept in a file;
//! - [`drift`] (pure): missing and excess permissions per person and store, high-risk first
//!   (permissions are readable but not writable through the API: reported, never "fixed");
//! - [`run`]: a pass: read (or reuse the cached read), plan, spend the budget step by step; a
//!   spent budget or a 429 pauses the pass, which is not a failure;
//! - [`render`]: the `--dry-run` text with the plan's cost in calls and time at the budget;
//! - [`access`]: `access-report --control-panel`, one row per person × store with the drift,
//!   read through the same budgeted, cached path as a pass.
//!
//! Durability: a pass recomputes the plan from desired vs observed, and observed is read again
//! after a restart (the cache lives in memory only), so no planned change can be lost; the budget
//! itself is durable (Redis, or a state file beside the provisioning queue file).

pub mod access;
pub mod budget;
pub mod desired;
pub mod drift;
pub mod model;
pub mod observe;
pub mod plan;
pub mod render;
pub mod run;
