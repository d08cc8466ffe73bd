//! Each Customer Login rule of docs/bigcommerce.md, enforced by the simulated storefront.

use axum::http::StatusCode;
use serde_json::{Value, json};
use storegate::bigcommerce::sim::{AcceptedLogin, LoginRejection as R};

use super::fixture::*;

#[tokio::test]
async fn valid_token_signs_in_with_a_scoped_cookie_and_redirects_to_redirect_to() {
    let sim = sim();
    let id = sim.customer(Some(vec![1]));
    let resp = sim.present(1, &craft(HEADER, &claims(id, 1), SECRET)).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(location(&resp), format!("{}/cart.php", prefix(1)));
    let cookie = set_cookie(&resp).unwrap();
    assert!(cookie.contains(&format!("Path={}", prefix(1))), "{cookie}");
    assert!(cookie.contains("HttpOnly"));
    assert_eq!(
        sim.handle.accepted_logins(),
        vec![AcceptedLogin {
            store_hash: HASH.into(),
            channel_id: 1,
            customer_id: id,
            redirect_to: "/cart.php".into()
        }]
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let page = text(sim.browse(&location(&resp), Some(&pair)).await).await;
    assert!(
        page.contains("Signed in as Ada Lovelace (ada@corp.example)"),
        "{page}"
    );
    assert!(
        page.contains("Corp Shop") && page.contains("Main"),
        "{page}"
    );
    let anonymous = text(sim.browse(&location(&resp), None).await).await;
    assert!(anonymous.contains("Not signed in"));
}

#[tokio::test]
async fn session_of_one_channel_does_not_sign_in_another() {
    let sim = sim();
    let id = sim.customer(None);
    let resp = sim.present(1, &craft(HEADER, &claims(id, 1), SECRET)).await;
    let pair = set_cookie(&resp)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = text(sim.browse(&format!("{}/", prefix(2)), Some(&pair)).await).await;
    assert!(page.contains("Not signed in"), "{page}");
}

#[tokio::test]
async fn missing_redirect_to_defaults_to_account_php_and_missing_channel_to_1() {
    let sim = sim();
    let id = sim.customer(None);
    let mut c = claims(id, 1);
    c.as_object_mut().unwrap().remove("redirect_to");
    c.as_object_mut().unwrap().remove("channel_id");
    let resp = sim.present(1, &craft(HEADER, &c, SECRET)).await;
    assert_eq!(location(&resp), format!("{}/account.php", prefix(1)));
}

#[tokio::test]
async fn header_other_than_exactly_typ_jwt_hs256_is_rejected() {
    for header in [
        r#"{"typ":"JWT","alg":"HS512"}"#,
        r#"{"typ":"JWT","alg":"none"}"#,
        r#"{"alg":"HS256"}"#,
        r#"{"typ":"JWT","alg":"HS256","kid":"1"}"#,
    ] {
        let sim = sim();
        let id = sim.customer(None);
        let resp = sim.present(1, &craft(header, &claims(id, 1), SECRET)).await;
        sim.assert_rejected(1, resp, R::BadHeader).await;
    }
}

#[tokio::test]
async fn garbage_token_is_rejected_as_malformed() {
    let sim = sim();
    let resp = sim.present(1, "not-a-jwt").await;
    sim.assert_rejected(1, resp, R::Malformed).await;
}

#[tokio::test]
async fn unknown_issuer_is_rejected() {
    let sim = sim();
    let id = sim.customer(None);
    let mut c = claims(id, 1);
    c["iss"] = json!("client-unknown");
    sim.assert_rejected(
        1,
        sim.present(1, &craft(HEADER, &c, SECRET)).await,
        R::UnknownIssuer,
    )
    .await;
}

#[tokio::test]
async fn signature_with_another_key_is_rejected() {
    let sim = sim();
    let id = sim.customer(None);
    let resp = sim.present(1, &craft(HEADER, &claims(id, 1), TOKEN)).await;
    sim.assert_rejected(1, resp, R::BadSignature).await;
}

#[tokio::test]
async fn modified_payload_is_rejected() {
    let sim = sim();
    let id = sim.customer(None);
    let good = craft(HEADER, &claims(id, 1), SECRET);
    let forged = craft(HEADER, &claims(id + 1, 1), "whatever");
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = forged.split('.').nth(1).unwrap();
    let spliced = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    sim.assert_rejected(1, sim.present(1, &spliced).await, R::BadSignature)
        .await;
}

#[tokio::test]
async fn account_of_another_store_cannot_sign_in_here() {
    let sim = sim();
    let id = sim.customer(None);
    let mut c = claims(id, 1);
    c["iss"] = json!("client-2");
    let resp = sim.present(1, &craft(HEADER, &c, "other-secret")).await;
    sim.assert_rejected(1, resp, R::IssuerNotOnThisStore).await;
}

#[tokio::test]
async fn iat_30_seconds_old_is_accepted_31_is_expired() {
    let sim = sim();
    let id = sim.customer(None);
    let mut c = claims(id, 1);
    c["iat"] = json!(NOW - 30);
    let ok = sim.present(1, &craft(HEADER, &c, SECRET)).await;
    assert_eq!(location(&ok), format!("{}/cart.php", prefix(1)));
    let sim = super::fixture::sim();
    let id = sim.customer(None);
    let mut c = claims(id, 1);
    c["iat"] = json!(NOW - 31);
    sim.assert_rejected(
        1,
        sim.present(1, &craft(HEADER, &c, SECRET)).await,
        R::Expired,
    )
    .await;
}

#[tokio::test]
async fn iat_one_second_in_the_future_is_rejected() {
    let sim = sim();
    let id = sim.customer(None);
    let mut c = claims(id, 1);
    c["iat"] = json!(NOW + 1);
    sim.assert_rejected(
        1,
        sim.present(1, &craft(HEADER, &c, SECRET)).await,
        R::IssuedInFuture,
    )
    .await;
}

#[tokio::test]
async fn iat_from_a_local_clock_ahead_of_the_store_is_rejected() {
    let sim = sim();
    sim.handle.set_clock_offset(-120);
    let id = sim.customer(None);
    // The gateway's clock says NOW, the store's says NOW - 120: the classic "Invalid login".
    sim.assert_rejected(
        1,
        sim.present(1, &craft(HEADER, &claims(id, 1), SECRET)).await,
        R::IssuedInFuture,
    )
    .await;
}

#[tokio::test]
async fn iat_from_a_local_clock_behind_the_store_is_expired() {
    let sim = sim();
    sim.clock.advance(45);
    let id = sim.customer(None);
    sim.assert_rejected(
        1,
        sim.present(1, &craft(HEADER, &claims(id, 1), SECRET)).await,
        R::Expired,
    )
    .await;
}

#[tokio::test]
async fn jti_is_one_time() {
    let sim = sim();
    let id = sim.customer(None);
    let token = craft(HEADER, &claims(id, 1), SECRET);
    assert_eq!(sim.present(1, &token).await.status(), StatusCode::FOUND);
    let again = sim.present(1, &token).await;
    assert_eq!(location(&again), format!("{}/login.php", prefix(1)));
    assert!(set_cookie(&again).is_none());
    assert_eq!(
        sim.handle.rejected_logins().last().map(|r| r.reason),
        Some(R::ReusedJti)
    );
    assert_eq!(sim.handle.accepted_logins().len(), 1);
}

#[tokio::test]
async fn jti_seen_on_another_store_is_reused() {
    let sim = sim();
    let id = sim.customer(None);
    let other = sim
        .handle
        .add_customer(OTHER_HASH, "b@x.example", "B", "X", None)
        .unwrap();
    let jti = uuid::Uuid::new_v4().to_string();
    let mut c = claims(other, 1);
    c["iss"] = json!("client-2");
    c["store_hash"] = json!(OTHER_HASH);
    c["jti"] = json!(jti);
    let first = sim
        .browse(
            &format!(
                "/storefront/{OTHER_HASH}/1/login/token/{}",
                craft(HEADER, &c, "other-secret")
            ),
            None,
        )
        .await;
    assert_eq!(first.status(), StatusCode::FOUND);
    let mut mine = claims(id, 1);
    mine["jti"] = json!(jti);
    let resp = sim.present(1, &craft(HEADER, &mine, SECRET)).await;
    assert_eq!(
        sim.handle.rejected_logins().last().map(|r| r.reason),
        Some(R::ReusedJti)
    );
    assert!(set_cookie(&resp).is_none());
}

#[tokio::test]
async fn missing_jti_is_rejected() {
    let sim = sim();
    let id = sim.customer(None);
    let mut c = claims(id, 1);
    c.as_object_mut().unwrap().remove("jti");
    sim.assert_rejected(
        1,
        sim.present(1, &craft(HEADER, &c, SECRET)).await,
        R::MissingJti,
    )
    .await;
}

async fn rejected_with(change: impl FnOnce(&mut Value), reason: R) {
    let sim = sim();
    let id = sim.customer(Some(vec![1]));
    let mut c = claims(id, 1);
    change(&mut c);
    sim.assert_rejected(1, sim.present(1, &craft(HEADER, &c, SECRET)).await, reason)
        .await;
}

#[tokio::test]
async fn operation_other_than_customer_login_is_rejected() {
    rejected_with(
        |c| c["operation"] = json!("current_customer"),
        R::WrongOperation,
    )
    .await;
}

#[tokio::test]
async fn store_hash_of_another_store_is_rejected() {
    rejected_with(
        |c| c["store_hash"] = json!(OTHER_HASH),
        R::StoreHashMismatch,
    )
    .await;
}

#[tokio::test]
async fn unknown_customer_is_rejected() {
    rejected_with(|c| c["customer_id"] = json!(999), R::UnknownCustomer).await;
}

#[tokio::test]
async fn channel_claim_for_another_storefront_is_rejected() {
    rejected_with(|c| c["channel_id"] = json!(2), R::ChannelMismatch).await;
}

#[tokio::test]
async fn absolute_redirect_to_is_rejected() {
    rejected_with(
        |c| c["redirect_to"] = json!("https://evil.example/"),
        R::AbsoluteRedirect,
    )
    .await;
    rejected_with(
        |c| c["redirect_to"] = json!("//evil.example/"),
        R::AbsoluteRedirect,
    )
    .await;
}

#[tokio::test]
async fn request_ip_of_another_browser_is_rejected_and_the_same_accepted() {
    rejected_with(
        |c| c["request_ip"] = json!("203.0.113.1"),
        R::RequestIpMismatch,
    )
    .await;
    let sim = sim();
    let id = sim.customer(None);
    let mut c = claims(id, 1);
    c["request_ip"] = json!(BROWSER);
    assert_eq!(
        sim.present(1, &craft(HEADER, &c, SECRET)).await.status(),
        StatusCode::FOUND
    );
    assert_eq!(sim.handle.accepted_logins().len(), 1);
}

#[tokio::test]
async fn customer_restricted_to_other_channels_is_rejected() {
    let sim = sim();
    let id = sim.customer(Some(vec![1]));
    let resp = sim.present(2, &craft(HEADER, &claims(id, 2), SECRET)).await;
    sim.assert_rejected(2, resp, R::ChannelNotAllowed).await;
}

#[tokio::test]
async fn customer_with_null_channel_ids_may_sign_in_to_any_channel() {
    let sim = sim();
    let id = sim.customer(None);
    let resp = sim.present(2, &craft(HEADER, &claims(id, 2), SECRET)).await;
    assert_eq!(location(&resp), format!("{}/cart.php", prefix(2)));
}

#[tokio::test]
async fn unknown_storefront_is_404() {
    let sim = sim();
    assert_eq!(
        sim.browse("/storefront/abc123/9/", None).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        sim.browse("/storefront/nope/1/", None).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn logout_ends_the_session() {
    let sim = sim();
    let id = sim.customer(None);
    let resp = sim.present(1, &craft(HEADER, &claims(id, 1), SECRET)).await;
    let pair = set_cookie(&resp)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    sim.browse(
        &format!("{}/login.php?action=logout", prefix(1)),
        Some(&pair),
    )
    .await;
    let page = text(sim.browse(&format!("{}/", prefix(1)), Some(&pair)).await).await;
    assert!(page.contains("Not signed in"));
}
