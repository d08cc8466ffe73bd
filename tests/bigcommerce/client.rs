//! The gateway's side against the simulator: minting through a policy decision, the HTTP client
//! over a loopback listener, the store clock and ensure_customer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use storegate::bigcommerce::api::{ApiError, HttpCustomers, StoreTime, one};
use storegate::bigcommerce::customers::ensure_customer;
use storegate::bigcommerce::login_jwt;
use storegate::bigcommerce::quick_retry::{QuickRetry, RetryPolicy};
use storegate::bigcommerce::sim::{SimConfig, SimHandle, Simulator};
use storegate::bigcommerce::store_clock::StoreClock;
use storegate::clock::ManualClock;
use storegate::identity::{AuthContext, Identity, IdpId, StoreId};
use storegate::policy::{
    Conditions, CustomerGroupRef, GrantSpec, LaunchDecision, Policy, Rule, StoreSelector,
};
use storegate::redirect::LocalPath;

use super::fixture::*;

fn identity(email: &str) -> Identity {
    Identity {
        subject: "sub-1".into(),
        idp: IdpId::new("opentext"),
        email: Some(email.into()),
        email_verified: true,
        given_name: Some("Ada".into()),
        family_name: Some("Lovelace".into()),
        name: None,
        groups: vec!["staff".into()],
        roles: vec![],
        attributes: Default::default(),
        auth: AuthContext::default(),
        signed_in_at: NOW,
    }
}

fn decision(id: &Identity, group: Option<CustomerGroupRef>) -> LaunchDecision {
    let policy = Policy::with_plain_stores(
        vec![StoreId::new("shop")],
        vec![Rule {
            conditions: Conditions {
                groups_any: vec!["staff".into()],
                ..Default::default()
            },
            grant: GrantSpec {
                customer_group: group,
                ..Default::default()
            },
            ..Rule::allow("staff", "buyer", StoreSelector::All)
        }],
    );
    policy
        .authorize_launch(id, &StoreId::new("shop"), NOW, &LocalPath::root())
        .unwrap()
}

/// Serves a simulator on 127.0.0.1:0; returns its base URL.
async fn serve(config: SimConfig) -> (String, SimHandle, ManualClock) {
    let clock = ManualClock::at(NOW);
    let (router, handle) = Simulator::with_clock(config, Arc::new(clock.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    (format!("http://{addr}/"), handle, clock)
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_rate_limit_wait: Duration::from_millis(20),
        default_rate_limit_wait: Duration::from_millis(10),
        server_error_backoff: Duration::from_millis(10),
    }
}

#[tokio::test]
async fn token_minted_after_a_policy_decision_is_accepted_by_the_simulator() {
    let sim = sim();
    sim.handle.set_clock_offset(-300); // the store's clock is 5 minutes behind ours
    let customer = sim.customer(Some(vec![2]));
    let id = identity("ada@corp.example");
    let d = decision(&id, None);
    let store_now = sim.handle.store_now();
    let token = login_jwt::mint(
        &d,
        &account("https://api.bigcommerce.com/"),
        HASH,
        customer,
        2,
        &LocalPath::parse("/checkout").unwrap(),
        Some(BROWSER.parse().unwrap()),
        store_now,
        uuid::Uuid::new_v4(),
    )
    .unwrap();
    let base = url::Url::parse(&format!("http://sim.invalid{}/", prefix(2))).unwrap();
    let url = token.login_url(&base);
    let path = url.strip_prefix("http://sim.invalid").unwrap();
    let resp = sim.browse(path, None).await;
    assert_eq!(
        location(&resp),
        format!("{}/checkout", prefix(2)),
        "{:?}",
        sim.handle.rejected_logins()
    );
    assert!(set_cookie(&resp).is_some());
    assert_eq!(sim.handle.accepted_logins()[0].customer_id, customer);
}

#[tokio::test]
async fn store_clock_reads_the_simulated_store_offset_over_http() {
    let (base, handle, clock) = serve(config()).await;
    handle.set_clock_offset(77);
    let api = HttpCustomers::new(&account(&base)).unwrap();
    let store_clock = StoreClock::new(Arc::new(clock.clone()));
    assert_eq!(store_clock.now(HASH, &api).await.unwrap(), NOW + 77);
    clock.advance(10);
    assert_eq!(store_clock.now(HASH, &api).await.unwrap(), NOW + 87);
    assert_eq!(handle.api_calls(HASH), 1, "cached within the TTL");
}

#[tokio::test]
async fn ensure_customer_creates_once_then_finds_the_same_customer() {
    let (base, handle, _) = serve(config()).await;
    let api = HttpCustomers::new(&account(&base)).unwrap();
    let id = identity("Ada@Corp.Example");
    let d = decision(&id, Some(CustomerGroupRef::Name("Staff".into())));
    let first = ensure_customer(&api, &id, &d, &[1]).await.unwrap();
    let second = ensure_customer(&api, &id, &d, &[1]).await.unwrap();
    assert_eq!(first, second);
    let customers = handle.customers(HASH);
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].channel_ids, Some(vec![1]));
    let groups = handle.customer_groups(HASH);
    assert_eq!(groups.len(), 1, "the group is created once");
    assert_eq!(groups[0].name, "Staff");
    assert_eq!(customers[0].customer_group_id, groups[0].id);
    assert_eq!(
        handle.attribute_value(HASH, first, "storegate_subject"),
        Some("opentext:sub-1".into())
    );
    let attrs = handle.attributes(HASH);
    assert_eq!(attrs.len(), 1, "the subject attribute is created once");
    assert_eq!(
        (attrs[0].name.as_str(), attrs[0].kind.as_str()),
        ("storegate_subject", "string")
    );
    // Attribute lookup + create, group lookup + create, email lookup + create; then the second
    // launch: the attribute id is cached, the group looked up, the customer found by email.
    assert_eq!(handle.api_calls(HASH), 6 + 2);
}

#[tokio::test]
async fn ensure_customer_unions_channels_of_an_existing_customer() {
    let (base, handle, _) = serve(config()).await;
    let existing = handle
        .add_customer(HASH, "ada@corp.example", "Ada", "L", Some(vec![2]))
        .unwrap();
    let api = HttpCustomers::new(&account(&base)).unwrap();
    let id = identity("ada@corp.example");
    let got = ensure_customer(&api, &id, &decision(&id, None), &[1])
        .await
        .unwrap();
    assert_eq!(got, existing);
    assert_eq!(handle.customers(HASH)[0].channel_ids, Some(vec![1, 2]));
}

#[tokio::test]
async fn a_5xx_is_retried_once() {
    let (base, handle, _) = serve(config()).await;
    let api = QuickRetry::wrap(
        Arc::new(HttpCustomers::new(&account(&base)).unwrap()),
        fast_retry(),
    );
    handle.fail_next(1, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.store_time().await.unwrap(), NOW);
    handle.fail_next(2, StatusCode::INTERNAL_SERVER_ERROR);
    let err = api.store_time().await.unwrap_err();
    assert!(
        matches!(err, ApiError::Rejected { status: 500, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_429_is_retried_once_then_reported_as_rate_limited() {
    let (base, handle, _) = serve(SimConfig {
        requests_per_window: 1,
        ..config()
    })
    .await;
    let api = QuickRetry::wrap(
        Arc::new(HttpCustomers::new(&account(&base)).unwrap()),
        fast_retry(),
    );
    api.store_time().await.unwrap();
    let err = api.store_time().await.unwrap_err();
    match err {
        ApiError::RateLimited { retry_after_ms } => {
            assert!(retry_after_ms > 1000, "{retry_after_ms}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(handle.api_calls(HASH), 3);
}

#[tokio::test]
async fn refusals_carry_bigcommerce_words_and_never_the_token() {
    let (base, handle, _) = serve(config()).await;
    handle.add_customer(HASH, "taken@corp.example", "T", "K", None);
    let api = HttpCustomers::new(&account(&base)).unwrap();
    let err = one::create_customer(
        &api,
        storegate::bigcommerce::api::NewCustomer {
            email: "taken@corp.example".into(),
            first_name: "A".into(),
            last_name: "B".into(),
            customer_group_id: None,
            channel_ids: vec![1],
            origin_channel_id: None,
            attributes: vec![],
        },
    )
    .await
    .unwrap_err();
    match &err {
        ApiError::Rejected {
            status: 422,
            message,
        } => assert!(message.contains("already in use"), "{message}"),
        other => panic!("{other:?}"),
    }
    let mut wrong = account(&base);
    wrong.access_token = storegate::secret::Secret::new("wrong-token");
    let err = HttpCustomers::new(&wrong)
        .unwrap()
        .store_time()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiError::Rejected { status: 401, .. }),
        "{err:?}"
    );
    for shown in [format!("{err}"), format!("{err:?}")] {
        assert!(
            !shown.contains("wrong-token") && !shown.contains(TOKEN),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn closed_port_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let api = HttpCustomers::new(&account(&format!("http://{addr}/"))).unwrap();
    let err = api.store_time().await.unwrap_err();
    assert!(matches!(err, ApiError::Unreachable { .. }), "{err:?}");
}
