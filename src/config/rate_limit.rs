//! `[rate_limit]`: the per-address limit on the sign-in endpoints (issue 10), the file shape and
//! the validated value. On by default with numbers an office behind one NAT address never meets.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct RateLimitFile {
    /// Sign-in requests (`/login`, OIDC callbacks, SAML ACS and SLO) a minute per client address,
    /// after the burst; one sign-in is two or three of them. 0 turns the limit off. Default 600.
    #[serde(default)]
    pub per_address_per_minute: Option<u32>,
    /// Requests one address may send at once before the per-minute rate applies. Default: twice
    /// `per_address_per_minute` (1200).
    #[serde(default)]
    pub per_address_burst: Option<u32>,
}

/// Validated `[rate_limit]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// `None`: off (`per_address_per_minute = 0`).
    pub sign_in: Option<SignInLimit>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            sign_in: Some(SignInLimit::default()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInLimit {
    pub per_minute: u32,
    pub burst: u32,
}

impl Default for SignInLimit {
    /// 300 people signing in within the same minute through one address (two requests each, a
    /// third with the IdP chooser) stay under it; one client still cannot send more than ten
    /// requests a second for long.
    fn default() -> Self {
        SignInLimit {
            per_minute: 600,
            burst: 1200,
        }
    }
}

/// The validated value, or the message for `storegate check`.
pub fn validate(f: &RateLimitFile) -> Result<RateLimitConfig, String> {
    let d = SignInLimit::default();
    let per_minute = f.per_address_per_minute.unwrap_or(d.per_minute);
    if per_minute == 0 {
        return Ok(RateLimitConfig { sign_in: None });
    }
    let burst = f.per_address_burst.unwrap_or(per_minute.saturating_mul(2));
    if burst == 0 {
        return Err("`rate_limit.per_address_burst` is 0, so no request would ever pass: set at least 1, or set `per_address_per_minute = 0` to turn the limit off".into());
    }
    Ok(RateLimitConfig {
        sign_in: Some(SignInLimit { per_minute, burst }),
    })
}
