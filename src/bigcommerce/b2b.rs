//! B2B Edition: putting the launching customer into the grant's company with the grant's role.
//!
//! docs/bigcommerce.md: API `https://api-b2b.bigcommerce.com/api/v3/io`, headers
//! `X-Auth-Token` + `X-Store-Hash`; company users carry `role` (0 admin, 1 senior buyer, 2 junior
//! buyer) or `companyRoleId` for custom roles; `GET /users/customer/{customerId}`; a company maps to
//! a customer group and has a `companyStatus` (0 pending, 1 approved, 2 rejected, 3 inactive).
//! B2B has no SSO token of its own: the Customer Login JWT session is the way in, so the gateway
//! only has to make the membership right before it mints.

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::{AccountError, ApiError};
use super::transport::StoreHttp;
use crate::identity::Identity;
use crate::policy::{B2bGrant, B2bRole, LaunchDecision};
use crate::secret::Secret;

/// `companyStatus` 1: approved. Users of other companies cannot buy.
pub const COMPANY_APPROVED: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    pub company_id: u64,
    #[serde(default)]
    pub company_name: String,
    pub company_status: u8,
    #[serde(default)]
    pub customer_group_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompanyUser {
    pub id: u64,
    pub customer_id: u64,
    /// Filled from the query when a company's user list leaves it out.
    #[serde(default)]
    pub company_id: u64,
    pub role: u8,
    #[serde(default)]
    pub company_role_id: Option<u64>,
}

impl CompanyUser {
    pub fn has_role(&self, want: B2bRole) -> bool {
        match want {
            B2bRole::Custom(id) => self.company_role_id == Some(id),
            r => r.role_number() == Some(self.role) && self.company_role_id.is_none(),
        }
    }
}

/// The B2B Edition operations the launch path and the reconciler need, on one store.
#[async_trait]
pub trait B2bApi: Send + Sync {
    async fn company(&self, company_id: u64) -> Result<Option<Company>, ApiError>;
    async fn user_by_customer(&self, customer_id: u64) -> Result<Option<CompanyUser>, ApiError>;
    /// Creates the company user for an existing customer (matched by email); returns its id.
    async fn create_user(
        &self,
        company_id: u64,
        identity: &Identity,
        role: B2bRole,
    ) -> Result<u64, ApiError>;
    async fn set_role(&self, user_id: u64, role: B2bRole) -> Result<(), ApiError>;
    /// One page of a company's users (`GET /users?companyId=&offset=&limit=`) and the total
    /// count, so the reconciler reads a company once per pass instead of once per person.
    async fn company_users(
        &self,
        company_id: u64,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<CompanyUser>, u64), ApiError>;
    /// Deletes a company user (`DELETE /users/{userId}`); one already gone is not an error.
    async fn delete_user(&self, user_id: u64) -> Result<(), ApiError>;
}

/// What the launch did in B2B Edition, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum B2bOutcome {
    Unchanged { user_id: u64 },
    Created { user_id: u64 },
    RoleChanged { user_id: u64 },
}

/// Brings the customer's company membership in line with the decision's grant. Never moves a
/// user between companies (that belongs to whoever administers the companies): a customer of
/// another company is a conflict, and no token is minted.
pub async fn ensure_company_user(
    api: &dyn B2bApi,
    decision: &LaunchDecision,
    identity: &Identity,
    customer_id: u64,
) -> Result<Option<B2bOutcome>, ApiError> {
    let Some(grant) = decision.grant().b2b else {
        return Ok(None);
    };
    usable_company(grant.company_id, api.company(grant.company_id).await?)?;
    let user = api.user_by_customer(customer_id).await?;
    let outcome = match membership_need(customer_id, user, grant)? {
        MembershipNeed::Unchanged(user) => B2bOutcome::Unchanged { user_id: user.id },
        MembershipNeed::RoleChange(user) => {
            api.set_role(user.id, grant.role).await?;
            B2bOutcome::RoleChanged { user_id: user.id }
        }
        MembershipNeed::Create => B2bOutcome::Created {
            user_id: api
                .create_user(grant.company_id, identity, grant.role)
                .await?,
        },
    };
    Ok(Some(outcome))
}

/// The company a grant names, as B2B Edition answered for it: usable only if it exists and is
/// approved; otherwise a conflict for an administrator. Shared by the launch and the reconciler.
pub fn usable_company(company_id: u64, found: Option<Company>) -> Result<Company, ApiError> {
    let company = found.ok_or_else(|| ApiError::B2bConflict {
        detail: format!("B2B company {company_id} does not exist"),
    })?;
    if company.company_status != COMPANY_APPROVED {
        return Err(ApiError::B2bConflict {
            detail: format!(
                "B2B company {company_id} is not approved (companyStatus {})",
                company.company_status
            ),
        });
    }
    Ok(company)
}

/// What the customer's company user (`None`: they have none) needs to match `grant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipNeed {
    Unchanged(CompanyUser),
    RoleChange(CompanyUser),
    Create,
}

/// Decides [`MembershipNeed`]; a user of another company is a conflict, never moved. Shared by
/// the launch and the reconciler.
pub fn membership_need(
    customer_id: u64,
    user: Option<CompanyUser>,
    grant: B2bGrant,
) -> Result<MembershipNeed, ApiError> {
    match user {
        Some(user) if user.company_id != grant.company_id => Err(ApiError::B2bConflict {
            detail: format!(
                "customer {customer_id} is a user of B2B company {}, not {}",
                user.company_id, grant.company_id
            ),
        }),
        Some(user) if user.has_role(grant.role) => Ok(MembershipNeed::Unchanged(user)),
        Some(user) => Ok(MembershipNeed::RoleChange(user)),
        None => Ok(MembershipNeed::Create),
    }
}

/// The role of a company user as text (`junior buyer`, `custom role #77`), for audit and plans.
pub fn role_text(user: &CompanyUser) -> String {
    match user.company_role_id {
        Some(id) => B2bRole::Custom(id).to_string(),
        None => match user.role {
            0 => B2bRole::Admin.to_string(),
            1 => B2bRole::SeniorBuyer.to_string(),
            2 => B2bRole::JuniorBuyer.to_string(),
            n => format!("role {n}"),
        },
    }
}

/// One [`HttpB2bApi`] per `[[bigcommerce]]` account that has B2B Edition access, by account id
/// (the gateway's launch path and the reconciler build them the same way).
pub fn clients(
    config: &crate::config::Config,
) -> Result<std::collections::HashMap<String, std::sync::Arc<dyn B2bApi>>, AccountError> {
    let mut b2b: std::collections::HashMap<String, std::sync::Arc<dyn B2bApi>> =
        std::collections::HashMap::new();
    for account in &config.bigcommerce {
        if let Some(access) = &account.b2b {
            let api = HttpB2bApi::new(
                &access.api_base,
                &account.store_hash,
                access.access_token.clone(),
                account.timeout,
            )
            .map_err(|e| AccountError::store(format!("{} (B2B Edition)", account.id), e))?;
            b2b.insert(account.id.clone(), std::sync::Arc::new(api));
        }
    }
    Ok(b2b)
}

/// [`B2bApi`] over HTTP.
pub struct HttpB2bApi {
    /// e.g. `https://api-b2b.bigcommerce.com/api/v3/io`, with `X-Store-Hash`.
    http: StoreHttp,
}

impl std::fmt::Debug for HttpB2bApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpB2bApi")
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize)]
struct Page {
    data: Vec<CompanyUser>,
    #[serde(default)]
    meta: PageMeta,
}

#[derive(Deserialize, Default)]
struct PageMeta {
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pagination {
    total_count: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    user_id: u64,
}

fn role_body(role: B2bRole) -> Value {
    match role {
        B2bRole::Custom(id) => json!({ "companyRoleId": id }),
        r => json!({ "role": r.role_number() }),
    }
}

impl HttpB2bApi {
    pub fn new(
        base: &url::Url,
        store_hash: &str,
        token: Secret,
        timeout: std::time::Duration,
    ) -> Result<Self, ApiError> {
        let http =
            StoreHttp::b2b(base, store_hash, token, timeout).map_err(ApiError::client_setup)?;
        Ok(HttpB2bApi { http })
    }

    /// One call; `Ok(None)` for 404. B2B Edition answers `{code, data, meta}` envelopes.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Vec<u8>>, ApiError> {
        let no_query: &[(&str, &str)] = &[];
        let reply = self
            .http
            .send(method, path, no_query, body.as_ref())
            .await?;
        let status = reply.status;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(reply.rate_limited());
        }
        let bytes = self.http.body(reply).await?;
        match status {
            s if s.is_success() => Ok(Some(bytes)),
            StatusCode::NOT_FOUND => Ok(None),
            s => {
                let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let message: String = v
                    .pointer("/data/errMsg")
                    .or_else(|| v.pointer("/meta/message"))
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .chars()
                    .take(300)
                    .collect();
                Err(ApiError::Rejected {
                    status: s.as_u16(),
                    message: format!("B2B Edition: {message}"),
                })
            }
        }
    }

    fn data<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
        serde_json::from_slice::<Envelope<T>>(bytes)
            .map(|e| e.data)
            .map_err(|e| ApiError::Unexpected {
                detail: format!("malformed JSON from B2B Edition: {e}"),
            })
    }
}

#[async_trait]
impl B2bApi for HttpB2bApi {
    async fn company(&self, company_id: u64) -> Result<Option<Company>, ApiError> {
        match self
            .call(Method::GET, &format!("/companies/{company_id}"), None)
            .await?
        {
            Some(b) => Self::data(&b).map(Some),
            None => Ok(None),
        }
    }

    async fn user_by_customer(&self, customer_id: u64) -> Result<Option<CompanyUser>, ApiError> {
        match self
            .call(Method::GET, &format!("/users/customer/{customer_id}"), None)
            .await?
        {
            Some(b) => Self::data(&b).map(Some),
            None => Ok(None),
        }
    }

    async fn create_user(
        &self,
        company_id: u64,
        identity: &Identity,
        role: B2bRole,
    ) -> Result<u64, ApiError> {
        let email = identity.email.as_deref().ok_or(ApiError::MissingEmail)?;
        let mut body = json!({
            "companyId": company_id,
            "email": email,
            "firstName": identity.given_name.as_deref().unwrap_or("-"),
            "lastName": identity.family_name.as_deref().unwrap_or("-"),
            "acceptWelcomeEmail": false,
        });
        if let (Value::Object(b), Value::Object(r)) = (&mut body, role_body(role)) {
            b.extend(r);
        }
        let bytes = self
            .call(Method::POST, "/users", Some(body))
            .await?
            .ok_or_else(|| ApiError::Unexpected {
                detail: "B2B Edition answered 404 to creating a user".into(),
            })?;
        Self::data::<Created>(&bytes).map(|c| c.user_id)
    }

    async fn set_role(&self, user_id: u64, role: B2bRole) -> Result<(), ApiError> {
        self.call(
            Method::PUT,
            &format!("/users/{user_id}"),
            Some(role_body(role)),
        )
        .await?
        .ok_or_else(|| ApiError::Unexpected {
            detail: format!("B2B Edition has no user {user_id}"),
        })
        .map(|_| ())
    }

    async fn company_users(
        &self,
        company_id: u64,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<CompanyUser>, u64), ApiError> {
        let bytes = self
            .call(
                Method::GET,
                &format!("/users?companyId={company_id}&offset={offset}&limit={limit}"),
                None,
            )
            .await?
            .ok_or_else(|| ApiError::Unexpected {
                detail: format!("B2B Edition answered 404 to listing company {company_id}'s users"),
            })?;
        let page: Page = serde_json::from_slice(&bytes).map_err(|e| ApiError::Unexpected {
            detail: format!("malformed user list from B2B Edition: {e}"),
        })?;
        let got = page.data.len() as u64;
        // Without a total, a full page means there may be more.
        let total = match page.meta.pagination {
            Some(p) => p.total_count,
            None if got < limit => offset + got,
            None => offset + got + 1,
        };
        let users = page
            .data
            .into_iter()
            .map(|u| CompanyUser { company_id, ..u })
            .collect();
        Ok((users, total))
    }

    async fn delete_user(&self, user_id: u64) -> Result<(), ApiError> {
        // `None` is 404: already gone, which is what was wanted.
        self.call(Method::DELETE, &format!("/users/{user_id}"), None)
            .await
            .map(|_| ())
    }
}
