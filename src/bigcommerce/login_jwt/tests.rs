use std::collections::HashSet;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::*;
use crate::bigcommerce::test_support::{NOW, account, decision};

fn path(p: &str) -> LocalPath {
    LocalPath::parse(p).unwrap()
}

fn mint_default(ip: Option<IpAddr>, now: UnixTime, jti: Uuid) -> LoginToken {
    mint(
        &decision(None),
        &account(),
        "abc123",
        42,
        3,
        &path("/cart.php"),
        ip,
        now,
        jti,
    )
    .unwrap()
}

/// Verifies the signature with an independent decoder (jsonwebtoken) and returns the claims.
fn verified_claims(token: &LoginToken) -> Value {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(
        token.expose(),
        &DecodingKey::from_secret(b"s3cret-key"),
        &validation,
    )
    .unwrap()
    .claims
}

#[test]
fn header_is_exactly_typ_jwt_alg_hs256() {
    let token = mint_default(None, NOW, Uuid::new_v4());
    let header_b64 = token.expose().split('.').next().unwrap();
    let header = URL_SAFE_NO_PAD.decode(header_b64).unwrap();
    assert_eq!(header, br#"{"typ":"JWT","alg":"HS256"}"#);
}

#[test]
fn signed_with_the_account_client_secret_and_no_other_key() {
    let token = mint_default(None, NOW, Uuid::new_v4());
    verified_claims(&token);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    let wrong = jsonwebtoken::decode::<Value>(
        token.expose(),
        &DecodingKey::from_secret(b"api-token"),
        &validation,
    );
    assert!(wrong.is_err(), "the access token must not be the HMAC key");
}

#[test]
fn claims_are_exactly_the_documented_set() {
    let jti = Uuid::new_v4();
    let claims = verified_claims(&mint_default(None, NOW, jti));
    assert_eq!(
        claims,
        json!({
            "iss": "client-1",
            "iat": NOW,
            "jti": jti.to_string(),
            "operation": "customer_login",
            "store_hash": "abc123",
            "customer_id": 42,
            "channel_id": 3,
            "redirect_to": "/cart.php",
        })
    );
}

#[test]
fn iat_is_the_store_clock_passed_in_not_the_local_clock() {
    let store_now = NOW - 937;
    let claims = verified_claims(&mint_default(None, store_now, Uuid::new_v4()));
    assert_eq!(claims["iat"], json!(store_now));
}

/// `mint` signs the token id its caller passes (a pure function cannot make one up); that the
/// launch passes a fresh one per token is proved end to end by
/// `tests/it/launch.rs::every_launch_mints_a_token_with_a_fresh_random_jti`.
#[test]
fn jti_is_the_uuid_the_caller_passes() {
    let jti = Uuid::parse_str("0b5c6c8e-1f0e-4c1a-9d8e-2f4a6b7c8d9e").expect("uuid");
    let claims = verified_claims(&mint_default(None, NOW, jti));
    assert_eq!(claims["jti"], json!("0b5c6c8e-1f0e-4c1a-9d8e-2f4a6b7c8d9e"));
}

#[test]
fn nil_jti_is_refused() {
    let err = mint(
        &decision(None),
        &account(),
        "abc123",
        42,
        3,
        &path("/"),
        None,
        NOW,
        Uuid::nil(),
    )
    .unwrap_err();
    assert_eq!(err, MintError::NilJti);
}

#[test]
fn request_ip_is_absent_when_none_and_exact_when_given() {
    let none = verified_claims(&mint_default(None, NOW, Uuid::new_v4()));
    assert!(none.get("request_ip").is_none());
    let v4 = verified_claims(&mint_default(
        Some("203.0.113.9".parse().unwrap()),
        NOW,
        Uuid::new_v4(),
    ));
    assert_eq!(v4["request_ip"], json!("203.0.113.9"));
    let v6 = verified_claims(&mint_default(
        Some("2001:db8::1".parse().unwrap()),
        NOW,
        Uuid::new_v4(),
    ));
    assert_eq!(v6["request_ip"], json!("2001:db8::1"));
}

#[test]
fn redirect_to_is_the_relative_local_path() {
    let token = mint(
        &decision(None),
        &account(),
        "abc123",
        42,
        3,
        &path("/login.php?action=logout"),
        None,
        NOW,
        Uuid::new_v4(),
    )
    .unwrap();
    assert_eq!(
        verified_claims(&token)["redirect_to"],
        json!("/login.php?action=logout")
    );
}

#[test]
fn store_hash_of_another_account_is_refused() {
    let err = mint(
        &decision(None),
        &account(),
        "other",
        42,
        3,
        &path("/"),
        None,
        NOW,
        Uuid::new_v4(),
    )
    .unwrap_err();
    assert!(matches!(err, MintError::StoreHashMismatch { .. }));
}

#[test]
fn zero_customer_or_channel_is_refused() {
    let d = decision(None);
    let a = account();
    let p = path("/");
    assert_eq!(
        mint(&d, &a, "abc123", 0, 3, &p, None, NOW, Uuid::new_v4()).unwrap_err(),
        MintError::InvalidCustomerId
    );
    assert_eq!(
        mint(&d, &a, "abc123", 42, 0, &p, None, NOW, Uuid::new_v4()).unwrap_err(),
        MintError::InvalidChannelId
    );
}

#[test]
fn empty_client_secret_is_refused() {
    let mut a = account();
    a.client_secret = crate::secret::Secret::new("");
    let err = mint(
        &decision(None),
        &a,
        "abc123",
        42,
        3,
        &path("/"),
        None,
        NOW,
        Uuid::new_v4(),
    )
    .unwrap_err();
    assert!(matches!(err, MintError::MissingCredentials { .. }));
}

#[test]
fn token_never_prints_and_login_url_strips_the_trailing_slash() {
    let token = mint_default(None, NOW, Uuid::new_v4());
    assert_eq!(format!("{token:?}"), "LoginToken(redacted)");
    let with_slash = Url::parse("https://shop.example/").unwrap();
    let prefixed = Url::parse("https://shop.example/storefront/abc123/3/").unwrap();
    assert_eq!(
        token.login_url(&with_slash),
        format!("https://shop.example/login/token/{}", token.expose())
    );
    assert_eq!(
        token.login_url(&prefixed),
        format!(
            "https://shop.example/storefront/abc123/3/login/token/{}",
            token.expose()
        )
    );
}

#[test]
fn the_header_segment_is_the_header_in_base64url() {
    assert_eq!(HEADER_SEGMENT, URL_SAFE_NO_PAD.encode(HEADER_JSON));
}

#[test]
fn a_changed_client_secret_signs_with_the_new_key_at_once() {
    // The key is made once per account and kept: a reload that rotates the secret must not
    // leave tokens signed with the old one.
    let mut a = account();
    a.id = "rotating-account".into();
    let mint_with = |a: &BigCommerceAccount| {
        mint(
            &decision(None),
            a,
            "abc123",
            42,
            3,
            &path("/cart.php"),
            None,
            NOW,
            Uuid::new_v4(),
        )
        .unwrap()
    };
    let verifies_with = |token: &LoginToken, secret: &[u8]| {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        jsonwebtoken::decode::<Value>(
            token.expose(),
            &DecodingKey::from_secret(secret),
            &validation,
        )
        .is_ok()
    };
    assert!(verifies_with(&mint_with(&a), b"s3cret-key"));
    a.client_secret = Secret::new("rotated-secret");
    let after = mint_with(&a);
    assert!(
        verifies_with(&after, b"rotated-secret"),
        "signed with a stale key"
    );
    assert!(!verifies_with(&after, b"s3cret-key"));
}
