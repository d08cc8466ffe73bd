//! The OIDC Back-Channel Logout 1.0 `logout_token`: parsing (untrusted input, fuzzed) and the
//! claim checks of section 2.6, pure and with the time passed in. The signature is checked by
//! `oidc::OidcProvider::verify_logout_token` with the IdP's keys before [`check_claims`] runs.

use base64::Engine;
use serde_json::{Map, Value};

use crate::clock::UnixTime;

/// Section 2.4: the member of `events` that makes a JWT a Logout Token.
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A logout token larger than this is refused before decoding (an OP's is well under 4 KiB).
pub const MAX_LEN: usize = 16 * 1024;

/// Why a logout token was refused. `reason()` is the stable code in the audit event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    #[error("the request carries no logout_token")]
    Missing,
    #[error("the logout token is not a signed JWT: {0}")]
    Malformed(&'static str),
    #[error("the logout token is encrypted (JWE); this gateway does not decrypt logout tokens")]
    Encrypted,
    #[error("the logout token's algorithm {0:?} is not in this IdP's id_token_algs")]
    Algorithm(String),
    #[error("the logout token's typ {0:?} is not logout+jwt")]
    Type(String),
    #[error("no key of the IdP verifies the logout token's signature")]
    Signature,
    #[error("the logout token's iss is not this IdP's issuer")]
    Issuer,
    #[error("the logout token's aud does not name this client")]
    Audience,
    #[error("the logout token's iat is missing, in the future or too old")]
    IssuedAt,
    #[error("the logout token has expired")]
    Expired,
    #[error("the logout token carries no jti")]
    NoJti,
    #[error("the logout token's events claim has no back-channel logout event")]
    Events,
    #[error("the logout token names neither sid nor sub")]
    NoSubject,
    #[error("the logout token carries a nonce (an ID token is not a logout token)")]
    Nonce,
    #[error("this logout token (jti) was already used")]
    Replay,
    #[error("the identity provider's keys cannot be loaded")]
    KeysUnavailable,
}

impl LogoutTokenError {
    pub fn reason(&self) -> &'static str {
        match self {
            LogoutTokenError::Missing => "logout_token_missing",
            LogoutTokenError::Malformed(_) => "logout_token_malformed",
            LogoutTokenError::Encrypted => "logout_token_encrypted",
            LogoutTokenError::Algorithm(_) => "logout_token_alg",
            LogoutTokenError::Type(_) => "logout_token_typ",
            LogoutTokenError::Signature => "logout_token_signature",
            LogoutTokenError::Issuer => "logout_token_iss",
            LogoutTokenError::Audience => "logout_token_aud",
            LogoutTokenError::IssuedAt => "logout_token_iat",
            LogoutTokenError::Expired => "logout_token_expired",
            LogoutTokenError::NoJti => "logout_token_no_jti",
            LogoutTokenError::Events => "logout_token_events",
            LogoutTokenError::NoSubject => "logout_token_no_sid_or_sub",
            LogoutTokenError::Nonce => "logout_token_nonce",
            LogoutTokenError::Replay => "logout_token_replay",
            LogoutTokenError::KeysUnavailable => "idp_unreachable",
        }
    }
}

/// A logout token split and decoded, signature not yet checked.
#[derive(Debug, Clone)]
pub struct ParsedLogoutToken {
    pub alg: String,
    pub kid: Option<String>,
    pub typ: Option<String>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: String,
    pub signature: Vec<u8>,
    pub claims: Map<String, Value>,
}

/// Splits and decodes a compact JWS. Refuses JWE (five parts), unsigned tokens and anything
/// that is not JSON objects in base64url.
pub fn parse(raw: &str) -> Result<ParsedLogoutToken, LogoutTokenError> {
    use LogoutTokenError::Malformed;
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(LogoutTokenError::Missing);
    }
    if raw.len() > MAX_LEN {
        return Err(Malformed("too large"));
    }
    let parts: Vec<&str> = raw.split('.').collect();
    match parts.len() {
        3 => {}
        5 => return Err(LogoutTokenError::Encrypted),
        _ => return Err(Malformed("not three base64url parts")),
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Map<String, Value> = b64
        .decode(parts[0])
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Malformed("header is not base64url JSON"))?;
    let claims: Map<String, Value> = b64
        .decode(parts[1])
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Malformed("payload is not base64url JSON"))?;
    let signature = b64
        .decode(parts[2])
        .map_err(|_| Malformed("signature is not base64url"))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(Malformed("header has no alg"))?
        .to_owned();
    if header.contains_key("enc") {
        return Err(LogoutTokenError::Encrypted);
    }
    // RFC 7515 4.1.11: a critical extension we do not understand makes the token invalid.
    if header.contains_key("crit") {
        return Err(Malformed("header names critical extensions"));
    }
    if signature.is_empty() || alg == "none" {
        return Err(LogoutTokenError::Algorithm(alg));
    }
    let text = |k: &str| header.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(ParsedLogoutToken {
        alg,
        kid: text("kid"),
        typ: text("typ"),
        signing_input: format!("{}.{}", parts[0], parts[1]),
        signature,
        claims,
    })
}

/// Section 2.6 step 2 (the part before the signature): the algorithm is one this IdP's ID
/// tokens may use (never `none`, never HS* with a client secret), and an explicit `typ`, when
/// present, is `logout+jwt` (section 2.4, explicit typing; a token typed as something else, an
/// access token say, is not one).
pub fn check_header(p: &ParsedLogoutToken, algs: &[String]) -> Result<(), LogoutTokenError> {
    if !algs.iter().any(|a| a == &p.alg) || p.alg.starts_with("HS") {
        return Err(LogoutTokenError::Algorithm(p.alg.clone()));
    }
    match p.typ.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("logout+jwt") | Some("application/logout+jwt") | Some("jwt") => Ok(()),
        Some(_) => Err(LogoutTokenError::Type(p.typ.clone().unwrap_or_default())),
    }
}

/// What the checks need to know of the IdP and the time.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub now: UnixTime,
    pub skew: i64,
    /// The oldest `iat` accepted, in seconds before now (plus the skew).
    pub max_age: i64,
}

/// The session(s) a valid logout token ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutOrder {
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub jti: String,
    /// Until when the `jti` must be remembered (after that, `iat` alone refuses the token).
    pub remember_until: UnixTime,
}

/// Section 2.6 steps 3 to 7, on claims whose signature was verified.
pub fn check_claims(
    claims: &Map<String, Value>,
    e: &Expected<'_>,
) -> Result<LogoutOrder, LogoutTokenError> {
    let text = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    // 3. "Validate the iss, aud, iat, and exp Claims in the same way they are validated in ID
    //    Tokens." iss: exact match with the issuer (OIDC Core 3.1.3.7 step 2).
    if text("iss").as_deref() != Some(e.issuer) {
        return Err(LogoutTokenError::Issuer);
    }
    // aud: "MUST contain the client_id ... as an audience" (a string or an array).
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == e.client_id,
        Some(Value::Array(v)) => v.iter().any(|a| a.as_str() == Some(e.client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err(LogoutTokenError::Audience);
    }
    // iat: required; not in the future beyond the skew, not older than the window.
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(LogoutTokenError::IssuedAt)?;
    if iat > e.now + e.skew || iat < e.now - e.max_age - e.skew {
        return Err(LogoutTokenError::IssuedAt);
    }
    // exp: optional in a logout token (section 2.4 lists it as optional); when present, honoured.
    if let Some(exp) = claims.get("exp") {
        let exp = exp.as_i64().ok_or(LogoutTokenError::Expired)?;
        if exp <= e.now - e.skew {
            return Err(LogoutTokenError::Expired);
        }
    }
    // 2.4: jti is REQUIRED (it is what makes a replay recognisable, step 8).
    let jti = text("jti").ok_or(LogoutTokenError::NoJti)?;
    // 4. "Verify that the Logout Token contains a sub Claim, a sid Claim, or both."
    let sid = text("sid");
    let sub = text("sub");
    if sid.is_none() && sub.is_none() {
        return Err(LogoutTokenError::NoSubject);
    }
    // 5. "Verify that the Logout Token contains an events Claim whose value is JSON object
    //    containing the member name http://schemas.openid.net/event/backchannel-logout."
    let has_event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|ev| ev.get(BACKCHANNEL_EVENT))
        .is_some_and(Value::is_object);
    if !has_event {
        return Err(LogoutTokenError::Events);
    }
    // 6. "Verify that the Logout Token does not contain a nonce Claim." (An ID token replayed
    //    here would carry one.)
    if claims.contains_key("nonce") {
        return Err(LogoutTokenError::Nonce);
    }
    Ok(LogoutOrder {
        sid,
        sub,
        jti,
        remember_until: iat + e.max_age + 2 * e.skew,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: UnixTime = 1_800_000_000;

    fn expected() -> Expected<'static> {
        Expected {
            issuer: "https://idp.example/nidp/oauth/nam",
            client_id: "storegate",
            now: NOW,
            skew: 60,
            max_age: 300,
        }
    }

    fn valid() -> Map<String, Value> {
        json!({
            "iss": "https://idp.example/nidp/oauth/nam",
            "aud": "storegate",
            "iat": NOW - 5,
            "jti": "j-1",
            "sid": "s-1",
            "sub": "ada",
            "events": { BACKCHANNEL_EVENT: {} },
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    /// One change to the valid claims.
    type Edit = Box<dyn FnOnce(&mut Map<String, Value>)>;

    fn with(f: impl FnOnce(&mut Map<String, Value>)) -> Result<LogoutOrder, LogoutTokenError> {
        let mut c = valid();
        f(&mut c);
        check_claims(&c, &expected())
    }

    fn jwt(header: Value, claims: Value, sig: &str) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.{sig}",
            b.encode(header.to_string()),
            b.encode(claims.to_string())
        )
    }

    #[test]
    fn a_valid_token_names_its_sid_sub_and_jti() {
        let o = check_claims(&valid(), &expected()).unwrap();
        assert_eq!(o.sid.as_deref(), Some("s-1"));
        assert_eq!(o.sub.as_deref(), Some("ada"));
        assert_eq!(o.jti, "j-1");
        assert_eq!(o.remember_until, NOW - 5 + 300 + 120);
    }

    #[test]
    fn sid_alone_or_sub_alone_is_enough() {
        assert!(with(|c| drop(c.remove("sid"))).is_ok());
        assert!(with(|c| drop(c.remove("sub"))).is_ok());
    }

    #[test]
    fn each_broken_claim_is_refused_with_its_reason() {
        let cases: Vec<(&str, Edit)> = vec![
            (
                "logout_token_iss",
                Box::new(|c| drop(c.insert("iss".into(), json!("https://evil.example")))),
            ),
            ("logout_token_iss", Box::new(|c| drop(c.remove("iss")))),
            (
                "logout_token_aud",
                Box::new(|c| drop(c.insert("aud".into(), json!("other-client")))),
            ),
            (
                "logout_token_aud",
                Box::new(|c| drop(c.insert("aud".into(), json!(["a", "b"])))),
            ),
            ("logout_token_aud", Box::new(|c| drop(c.remove("aud")))),
            ("logout_token_iat", Box::new(|c| drop(c.remove("iat")))),
            (
                "logout_token_iat",
                Box::new(|c| drop(c.insert("iat".into(), json!(NOW + 61)))),
            ),
            (
                "logout_token_iat",
                Box::new(|c| drop(c.insert("iat".into(), json!(NOW - 361)))),
            ),
            (
                "logout_token_iat",
                Box::new(|c| drop(c.insert("iat".into(), json!("yesterday")))),
            ),
            (
                "logout_token_expired",
                Box::new(|c| drop(c.insert("exp".into(), json!(NOW - 60)))),
            ),
            ("logout_token_no_jti", Box::new(|c| drop(c.remove("jti")))),
            (
                "logout_token_no_jti",
                Box::new(|c| drop(c.insert("jti".into(), json!("")))),
            ),
            (
                "logout_token_no_sid_or_sub",
                Box::new(|c| {
                    c.remove("sid");
                    c.remove("sub");
                }),
            ),
            (
                "logout_token_events",
                Box::new(|c| drop(c.remove("events"))),
            ),
            (
                "logout_token_events",
                Box::new(|c| drop(c.insert("events".into(), json!({"http://other/event": {}})))),
            ),
            (
                "logout_token_events",
                Box::new(|c| drop(c.insert("events".into(), json!({BACKCHANNEL_EVENT: "yes"})))),
            ),
            (
                "logout_token_nonce",
                Box::new(|c| drop(c.insert("nonce".into(), json!("n")))),
            ),
        ];
        for (reason, f) in cases {
            let got = with(f).unwrap_err();
            assert_eq!(got.reason(), reason, "{got}");
        }
    }

    #[test]
    fn the_iat_window_edges() {
        assert!(with(|c| drop(c.insert("iat".into(), json!(NOW + 60)))).is_ok());
        assert!(with(|c| drop(c.insert("iat".into(), json!(NOW - 360)))).is_ok());
        assert!(with(|c| drop(c.insert("exp".into(), json!(NOW - 59)))).is_ok());
    }

    #[test]
    fn the_audience_may_be_an_array_holding_the_client() {
        assert!(with(|c| drop(c.insert("aud".into(), json!(["x", "storegate"])))).is_ok());
    }

    #[test]
    fn parse_refuses_what_is_not_a_signed_jwt() {
        let claims = Value::Object(valid());
        let ok = jwt(
            json!({"alg": "RS256", "kid": "k1", "typ": "logout+jwt"}),
            claims.clone(),
            "c2ln",
        );
        let p = parse(&ok).unwrap();
        assert_eq!((p.alg.as_str(), p.kid.as_deref()), ("RS256", Some("k1")));
        assert_eq!(p.signature, b"sig");
        for (raw, reason) in [
            ("".to_owned(), "logout_token_missing"),
            ("a.b".to_owned(), "logout_token_malformed"),
            ("a.b.c.d.e".to_owned(), "logout_token_encrypted"),
            ("!!.!!.!!".to_owned(), "logout_token_malformed"),
            (
                jwt(json!({"alg": "none"}), claims.clone(), ""),
                "logout_token_alg",
            ),
            (
                jwt(json!({"alg": "RS256"}), claims.clone(), ""),
                "logout_token_alg",
            ),
            (
                jwt(
                    json!({"alg": "RS256", "crit": ["x"]}),
                    claims.clone(),
                    "c2ln",
                ),
                "logout_token_malformed",
            ),
            (
                jwt(json!({"typ": "JWT"}), claims.clone(), "c2ln"),
                "logout_token_malformed",
            ),
            (
                jwt(json!(["alg"]), claims.clone(), "c2ln"),
                "logout_token_malformed",
            ),
            ("x".repeat(MAX_LEN + 1), "logout_token_malformed"),
        ] {
            assert_eq!(parse(&raw).unwrap_err().reason(), reason, "{raw:.60}");
        }
    }

    #[test]
    fn the_header_must_use_an_allowed_asymmetric_algorithm_and_a_logout_type() {
        let algs = ["RS256".to_owned()];
        let claims = Value::Object(valid());
        let header = |h: Value| parse(&jwt(h, claims.clone(), "c2ln")).unwrap();
        assert!(check_header(&header(json!({"alg": "RS256"})), &algs).is_ok());
        assert!(check_header(&header(json!({"alg": "RS256", "typ": "logout+jwt"})), &algs).is_ok());
        for (h, reason) in [
            (json!({"alg": "HS256"}), "logout_token_alg"),
            (json!({"alg": "ES256"}), "logout_token_alg"),
            (json!({"alg": "RS256", "typ": "at+jwt"}), "logout_token_typ"),
        ] {
            assert_eq!(
                check_header(&header(h), &algs).unwrap_err().reason(),
                reason
            );
        }
        // HS* is refused even when an administrator listed it.
        let hs = ["HS256".to_owned()];
        assert!(check_header(&header(json!({"alg": "HS256"})), &hs).is_err());
    }
}
