//! How a simulated storefront checks a Customer Login JWT, written independently of the minter
//! (`login_jwt`) so that the pair tests each other. Each check quotes the docs/bigcommerce.md rule.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Serialize;
use serde_json::{Map, Value};

use super::SimStore;
use crate::clock::UnixTime;

/// Why a storefront said "Invalid login". BigCommerce tells the browser nothing more; the
/// simulator records the reason so tests can assert on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginRejection {
    /// Not three base64url parts of JSON.
    Malformed,
    /// The header is not exactly `{"typ":"JWT","alg":"HS256"}`.
    BadHeader,
    /// No API account has the client id in `iss`.
    UnknownIssuer,
    /// The `iss` account is not installed on this store.
    IssuerNotOnThisStore,
    BadSignature,
    MissingJti,
    /// The `jti` was presented before: a token is good once.
    ReusedJti,
    WrongOperation,
    StoreHashMismatch,
    MissingIat,
    /// `iat` more than 30 s before the store's clock.
    Expired,
    /// `iat` after the store's clock.
    IssuedInFuture,
    /// `channel_id` is not the channel of the storefront the token was sent to.
    ChannelMismatch,
    /// `redirect_to` is not a relative path.
    AbsoluteRedirect,
    /// `request_ip` differs from the browser's address.
    RequestIpMismatch,
    UnknownCustomer,
    /// The customer's `channel_ids` do not include this channel.
    ChannelNotAllowed,
}

/// docs/bigcommerce.md: "`iat` ... Valid for 30 s only".
pub const MAX_AGE_SECS: i64 = 30;

/// One presentation of a token at a storefront.
pub(super) struct Attempt<'a> {
    pub token: &'a str,
    pub store_hash: &'a str,
    pub channel_id: u64,
    pub client_ip: Option<IpAddr>,
    pub store_now: UnixTime,
}

/// What a verified token asks for.
#[derive(Debug)]
pub(super) struct Verified {
    pub customer_id: u64,
    pub redirect_to: String,
}

/// The stateful parts, supplied by the caller under its lock.
pub(super) trait Ledger {
    /// Records `jti`; false when it was seen before.
    fn consume_jti(&mut self, jti: &str) -> bool;
    /// `None`: no such customer; `Some(None)`: allowed on all channels.
    fn customer_channels(&self, store_hash: &str, customer_id: u64) -> Option<Option<Vec<u64>>>;
}

pub(super) fn verify(
    attempt: &Attempt<'_>,
    accounts: &[SimStore],
    ledger: &mut dyn Ledger,
) -> Result<Verified, LoginRejection> {
    use LoginRejection as R;
    let mut parts = attempt.token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(R::Malformed);
    };
    let header = decode_object(h).ok_or(R::Malformed)?;
    let claims = decode_object(p).ok_or(R::Malformed)?;

    // "JWT header exactly {"typ":"JWT","alg":"HS256"}": no other alg, no extra member.
    let expected: Map<String, Value> = [
        ("typ".to_owned(), Value::from("JWT")),
        ("alg".to_owned(), Value::from("HS256")),
    ]
    .into_iter()
    .collect();
    if header != expected {
        return Err(R::BadHeader);
    }

    // "HMAC key = the client secret of the API account whose client id is in iss".
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(R::UnknownIssuer)?;
    let account = accounts
        .iter()
        .find(|a| a.client_id == iss)
        .ok_or(R::UnknownIssuer)?;
    let key = DecodingKey::from_secret(account.client_secret.expose().as_bytes());
    let message = format!("{h}.{p}");
    if !jsonwebtoken::crypto::verify(s, message.as_bytes(), &key, Algorithm::HS256).unwrap_or(false)
    {
        return Err(R::BadSignature);
    }
    if !accounts
        .iter()
        .any(|a| a.store_hash == attempt.store_hash && a.client_id == iss)
    {
        return Err(R::IssuerNotOnThisStore);
    }

    // "jti unique across all requests of the app; a token can be used once". Burned as soon as
    // the signature holds, so a rejected token cannot be retried either.
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty());
    let jti = jti.ok_or(R::MissingJti)?;
    if !ledger.consume_jti(jti) {
        return Err(R::ReusedJti);
    }

    // "operation always customer_login".
    if claims.get("operation").and_then(Value::as_str) != Some("customer_login") {
        return Err(R::WrongOperation);
    }
    if claims.get("store_hash").and_then(Value::as_str) != Some(attempt.store_hash) {
        return Err(R::StoreHashMismatch);
    }

    // "iat: Unix seconds. Valid for 30 s only; rejected if in the future."
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(R::MissingIat)?;
    if iat > attempt.store_now {
        return Err(R::IssuedInFuture);
    }
    if attempt.store_now - iat > MAX_AGE_SECS {
        return Err(R::Expired);
    }

    // "channel_id: optional, default 1".
    let channel = match claims.get("channel_id") {
        None | Some(Value::Null) => 1,
        Some(v) => v.as_u64().ok_or(R::ChannelMismatch)?,
    };
    if channel != attempt.channel_id {
        return Err(R::ChannelMismatch);
    }

    // "redirect_to: optional relative path, default /account.php".
    let redirect_to = match claims.get("redirect_to") {
        None | Some(Value::Null) => "/account.php".to_owned(),
        Some(v) => {
            let r = v.as_str().ok_or(R::AbsoluteRedirect)?;
            if !is_relative_path(r) {
                return Err(R::AbsoluteRedirect);
            }
            r.to_owned()
        }
    };

    // "request_ip: when present BigCommerce rejects a browser whose IP differs".
    if let Some(v) = claims.get("request_ip").filter(|v| !v.is_null()) {
        let wanted: Option<IpAddr> = v.as_str().and_then(|s| s.parse().ok());
        if wanted.is_none() || wanted != attempt.client_ip {
            return Err(R::RequestIpMismatch);
        }
    }

    // "customer_id: integer id of an existing customer", allowed on this channel.
    let customer_id = claims
        .get("customer_id")
        .and_then(Value::as_u64)
        .ok_or(R::UnknownCustomer)?;
    match ledger.customer_channels(attempt.store_hash, customer_id) {
        None => Err(R::UnknownCustomer),
        Some(Some(channels)) if !channels.contains(&attempt.channel_id) => {
            Err(R::ChannelNotAllowed)
        }
        Some(_) => Ok(Verified {
            customer_id,
            redirect_to,
        }),
    }
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A path on the storefront's own origin: starts with one '/', no scheme, no host, no backslash.
fn is_relative_path(r: &str) -> bool {
    r.starts_with('/')
        && !r.starts_with("//")
        && !r.contains('\\')
        && !r.chars().any(char::is_control)
}
