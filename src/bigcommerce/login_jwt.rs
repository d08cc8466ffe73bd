//! Minting Customer Login JWTs: pure, no I/O.
//!
//! A token can only be minted from a [`LaunchDecision`], which only `Policy::authorize_launch` can
//! produce, so "mint without an entitlement check" does not compile. The token is a
//! [`LoginToken`], which never prints; the one accessor is [`LoginToken::expose`].

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use ring::hmac;
use serde::Serialize;
use url::Url;
use uuid::Uuid;

use crate::clock::UnixTime;
use crate::config::BigCommerceAccount;
use crate::policy::LaunchDecision;
use crate::redirect::LocalPath;
use crate::secret::Secret;

/// docs/bigcommerce.md: "JWT header exactly `{"typ":"JWT","alg":"HS256"}`". Written as bytes so no
/// library default (a `kid`, a different key order) can change it.
pub const HEADER_JSON: &str = r#"{"typ":"JWT","alg":"HS256"}"#;

/// [`HEADER_JSON`] in base64url: every token's first segment, so not encoded again per token
/// (a test checks the two agree).
const HEADER_SEGMENT: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9";

/// docs/bigcommerce.md: "`operation` always `"customer_login"`".
pub const OPERATION: &str = "customer_login";

/// The claims, in the order BigCommerce documents them.
#[derive(Serialize)]
struct Claims<'a> {
    /// The API account's client id; BigCommerce picks the HMAC key by it.
    iss: &'a str,
    /// Store time, not ours: a skewed gateway clock is the classic "Invalid login".
    iat: UnixTime,
    /// One-time token id.
    jti: &'a str,
    operation: &'static str,
    store_hash: &'a str,
    customer_id: u64,
    /// Always sent: a missing channel id breaks Multi-Storefront and embedded checkout.
    channel_id: u64,
    /// A relative path only: an absolute URL broke session persistence in practice.
    redirect_to: &'a str,
    /// Only when the store binds the session to the browser's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("the store hash {requested:?} does not belong to BigCommerce account {account:?}")]
    StoreHashMismatch { account: String, requested: String },
    #[error("BigCommerce account {account:?} has an empty client id or client secret")]
    MissingCredentials { account: String },
    #[error("customer id 0 is not a BigCommerce customer")]
    InvalidCustomerId,
    #[error("channel id 0 is not a BigCommerce channel")]
    InvalidChannelId,
    #[error("the token id must be a fresh random UUID, not the nil UUID")]
    NilJti,
    #[error("signing the login token failed: {0}")]
    Signing(String),
}

/// A signed Customer Login JWT. Not `Clone`, never printed: use it once, at the redirect.
pub struct LoginToken(String);

impl LoginToken {
    /// The compact JWT. Every call site hands a bearer credential out: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `{storefront base without trailing slash}/login/token/{jwt}`, the URL the browser is sent to.
    pub fn login_url(&self, storefront_base: &Url) -> String {
        format!(
            "{}/login/token/{}",
            storefront_base.as_str().trim_end_matches('/'),
            self.0
        )
    }
}

impl fmt::Debug for LoginToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginToken(redacted)")
    }
}

/// Mints one Customer Login JWT for the launch `decision` allowed.
///
/// `store_now` must come from the store's clock (`StoreClock::now`), and `jti` must be a fresh
/// `Uuid::new_v4()` per call: both are parameters so that tests can pin them.
#[allow(clippy::too_many_arguments)]
pub fn mint(
    decision: &LaunchDecision,
    account: &BigCommerceAccount,
    store_hash: &str,
    customer_id: u64,
    channel_id: u64,
    redirect_to: &LocalPath,
    request_ip: Option<IpAddr>,
    store_now: UnixTime,
    jti: Uuid,
) -> Result<LoginToken, MintError> {
    // The decision is the proof that the entitlement check ran for this request; its content is
    // recorded by the caller's audit event, not in the token.
    let _proof: &LaunchDecision = decision;
    if account.store_hash != store_hash {
        return Err(MintError::StoreHashMismatch {
            account: account.id.clone(),
            requested: store_hash.to_owned(),
        });
    }
    if account.client_id.is_empty() || account.client_secret.is_empty() {
        return Err(MintError::MissingCredentials {
            account: account.id.clone(),
        });
    }
    if customer_id == 0 {
        return Err(MintError::InvalidCustomerId);
    }
    if channel_id == 0 {
        return Err(MintError::InvalidChannelId);
    }
    if jti.is_nil() {
        return Err(MintError::NilJti);
    }
    let mut jti_text = Uuid::encode_buffer();
    let claims = Claims {
        iss: &account.client_id,
        iat: store_now,
        jti: jti.hyphenated().encode_lower(&mut jti_text),
        operation: OPERATION,
        store_hash,
        customer_id,
        channel_id,
        redirect_to: redirect_to.as_str(),
        request_ip: request_ip.map(|ip| ip.to_string()),
    };
    let payload = serde_json::to_vec(&claims).map_err(|e| MintError::Signing(e.to_string()))?;
    // HS256 (RFC 7515): base64url(header) "." base64url(claims), then "." base64url of its
    // HMAC-SHA256, written into one string.
    let mut token = String::with_capacity(HEADER_SEGMENT.len() + payload.len() * 4 / 3 + 48);
    token.push_str(HEADER_SEGMENT);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let tag = hmac::sign(&signing_key(account), token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
    Ok(LoginToken(token))
}

/// HMAC keys by account id, each with the client secret it was made from. Making a key hashes the
/// padded secret twice, which a launch need not repeat (issue 15); a key whose account's secret
/// has changed since (a reload) is made again, never used.
static KEYS: LazyLock<Mutex<HashMap<String, (Secret, hmac::Key)>>> = LazyLock::new(Mutex::default);

/// Accounts are few (configuration); beyond this the map starts again empty.
const KEYS_CAP: usize = 64;

fn signing_key(account: &BigCommerceAccount) -> hmac::Key {
    let mut keys = KEYS.lock();
    if let Some((secret, key)) = keys.get(&account.id)
        && *secret == account.client_secret
    {
        return key.clone();
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, account.client_secret.expose().as_bytes());
    if keys.len() >= KEYS_CAP {
        keys.clear();
    }
    keys.insert(
        account.id.clone(),
        (account.client_secret.clone(), key.clone()),
    );
    key
}

#[cfg(test)]
mod tests;
