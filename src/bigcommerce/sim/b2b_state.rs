//! The simulated B2B Edition's memory per store: its token, companies, company users and the
//! injected failures. Kept apart from the routes (`b2b.rs`) so the store's state (`state.rs`)
//! can hold it without importing the routes, which import the state back.

use axum::http::StatusCode;

use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCompany {
    pub id: u64,
    pub name: String,
    /// 0 pending, 1 approved, 2 rejected, 3 inactive.
    pub status: u8,
    pub customer_group_id: u64,
    /// Custom company roles (`companyRoleId`s) defined for this company.
    pub custom_roles: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCompanyUser {
    pub id: u64,
    pub customer_id: u64,
    pub company_id: u64,
    pub role: u8,
    pub company_role_id: Option<u64>,
    pub email: String,
}

#[derive(Debug, Default)]
pub(super) struct B2bData {
    pub token: Option<Secret>,
    pub companies: Vec<SimCompany>,
    pub users: Vec<SimCompanyUser>,
    pub next_user: u64,
    pub calls: u64,
    /// Injected failures: how many, the status, and a `Retry-After` in seconds.
    pub fail_next: Option<(u32, StatusCode, Option<u64>)>,
}
