use serde_json::{Value, json};

use super::*;

fn body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn a_429_is_rate_limited_with_its_retry_after() {
    assert_eq!(
        decode::<Value>(429, Some("120"), b"{}"),
        Err(AccountApiError::RateLimited {
            retry_after_secs: Some(120)
        })
    );
    assert_eq!(
        decode::<Value>(429, Some("soon"), b""),
        Err(AccountApiError::RateLimited {
            retry_after_secs: None
        })
    );
}

#[test]
fn refusals_and_failures_are_classed() {
    let e = decode::<Value>(
        401,
        None,
        &body(json!({"errors": [{"message": "Invalid X-Auth-Token"}]})),
    )
    .unwrap_err();
    assert_eq!(
        e,
        AccountApiError::Refused {
            status: 401,
            message: "Invalid X-Auth-Token".into()
        }
    );
    assert_eq!(e.class(), ErrorClass::NeedsAdministrator);
    let e = decode::<Value>(503, None, b"<html>").unwrap_err();
    assert_eq!(e, AccountApiError::Transient("HTTP 503".into()));
    assert_eq!(e.class(), ErrorClass::Upstream { retryable: true });
}

#[test]
fn graphql_errors_with_200_are_refusals_even_with_data() {
    let e = decode::<Value>(
        200,
        None,
        &body(json!({"data": {"user": {"addUserToStore": null}}, "errors": [{"message": "The user already has access to this store", "path": ["user", "addUserToStore"]}]})),
    )
    .unwrap_err();
    assert_eq!(
        e,
        AccountApiError::GraphQl {
            messages: vec!["The user already has access to this store".into()]
        }
    );
    assert_eq!(e.class(), ErrorClass::NeedsAdministrator);
}

#[test]
fn a_body_that_is_not_the_documented_shape_is_unexpected() {
    assert!(matches!(
        decode::<Value>(200, None, b"not json"),
        Err(AccountApiError::Unexpected(_))
    ));
    assert!(matches!(
        decode::<Value>(200, None, &body(json!({"data": null}))),
        Err(AccountApiError::Unexpected(_))
    ));
    assert!(matches!(
        decode::<wire::AccountUsersData>(
            200,
            None,
            &body(json!({"data": {"account": {"users": {"edges": []}}}}))
        ),
        Err(AccountApiError::Unexpected(_))
    ));
    // A mutation answering `null` without errors did not happen.
    assert!(
        mutated(
            &json!({"user": {"addUserToStore": null}}),
            "/user/addUserToStore"
        )
        .is_err()
    );
    assert!(
        mutated(
            &json!({"user": {"addUserToStore": {"storeId": "s1"}}}),
            "/user/addUserToStore"
        )
        .is_ok()
    );
}

#[test]
fn a_page_of_users_keeps_the_cursor_only_when_there_is_a_next_page() {
    let d: wire::AccountUsersData = decode(
        200,
        None,
        &body(json!({"data": {"account": {"users": {"pageInfo": {"hasNextPage": true, "endCursor": "u2"}, "edges": [{"node": {"id": "bc/account/user/1", "email": "a@x.example"}}, {"node": {"id": "bc/account/user/2", "email": "b@x.example"}}]}}}})),
    )
    .unwrap();
    let p = d.account.users.into_page();
    assert_eq!(p.next.as_deref(), Some("u2"));
    assert_eq!(p.items.len(), 2);
    let d: wire::AccountUsersData = decode(
        200,
        None,
        &body(json!({"data": {"account": {"users": {"pageInfo": {"hasNextPage": false, "endCursor": "u2"}, "edges": []}}}})),
    )
    .unwrap();
    assert_eq!(d.account.users.into_page().next, None);
}
