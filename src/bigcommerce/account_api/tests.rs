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
    let p = d.account.users.into_page(PAGE_SIZE).unwrap();
    assert_eq!(p.next.as_deref(), Some("u2"));
    assert_eq!(p.items.len(), 2);
    let d: wire::AccountUsersData = decode(
        200,
        None,
        &body(json!({"data": {"account": {"users": {"pageInfo": {"hasNextPage": false, "endCursor": "u2"}, "edges": []}}}})),
    )
    .unwrap();
    assert_eq!(d.account.users.into_page(PAGE_SIZE).unwrap().next, None);
}

fn users_page(page_info: Value, edges: usize) -> Vec<u8> {
    let edges: Vec<Value> = (0..edges)
        .map(|i| json!({"node": {"id": format!("bc/account/user/{i}"), "email": format!("u{i}@x.example")}}))
        .collect();
    body(json!({"data": {"account": {"users": {"pageInfo": page_info, "edges": edges}}}}))
}

/// Seeds `tests/fuzz/corpus/account_api_decode/hostile-no-cursor` and `-long-cursor`: a page
/// that cannot be continued or would carry an unbounded cursor is refused, never read as the
/// last page.
#[test]
fn a_next_page_without_a_usable_cursor_is_unexpected_not_the_end() {
    for info in [
        json!({"hasNextPage": true}),
        json!({"hasNextPage": true, "endCursor": null}),
        json!({"hasNextPage": true, "endCursor": ""}),
    ] {
        assert_eq!(
            decode_account_users(200, None, &users_page(info.clone(), 1)),
            Err(AccountApiError::Unexpected(
                "a page says more follow but gives no endCursor".into()
            )),
            "{info}"
        );
    }
    let long = "c".repeat(MAX_CURSOR + 1);
    assert_eq!(
        decode_account_users(
            200,
            None,
            &users_page(json!({"hasNextPage": true, "endCursor": long}), 1)
        ),
        Err(AccountApiError::Unexpected(format!(
            "a page cursor of {} bytes (at most {MAX_CURSOR})",
            MAX_CURSOR + 1
        )))
    );
    // At the bound, and the last page without a cursor: fine.
    let at = "c".repeat(MAX_CURSOR);
    let p = decode_account_users(
        200,
        None,
        &users_page(json!({"hasNextPage": true, "endCursor": at.clone()}), 1),
    )
    .unwrap();
    assert_eq!(p.next, Some(at));
    let p = decode_account_users(200, None, &users_page(json!({"hasNextPage": false}), 2)).unwrap();
    assert_eq!((p.items.len(), p.next), (2, None));
}

#[test]
fn a_page_larger_than_asked_is_unexpected() {
    let n = PAGE_SIZE as usize;
    assert!(decode_account_users(200, None, &users_page(json!({"hasNextPage": false}), n)).is_ok());
    assert_eq!(
        decode_account_users(200, None, &users_page(json!({"hasNextPage": false}), n + 1)),
        Err(AccountApiError::Unexpected(format!(
            "{} users in a page of at most {PAGE_SIZE}",
            n + 1
        )))
    );
    let store = |i: usize| json!({"cursor": format!("s{i}"), "node": {"storeHash": format!("h{i}"), "users": {"pageInfo": {"hasNextPage": false}, "edges": []}}});
    let stores = body(
        json!({"data": {"account": {"stores": {"pageInfo": {"hasNextPage": false}, "edges": [store(1), store(2)]}}}}),
    );
    assert_eq!(
        decode_store_users(200, None, &stores, 2).map(|p| p.stores.len()),
        Ok(2)
    );
    assert_eq!(
        decode_store_users(200, None, &stores, 1),
        Err(AccountApiError::Unexpected(
            "2 stores in a page of at most 1".into()
        ))
    );
}

/// Seed `tests/fuzz/corpus/account_api_decode/hostile-duplicate-errors`: a repeated `errors`
/// member (the last one empty) must not hide the first; the oracle of the fuzz target found it.
#[test]
fn a_repeated_errors_member_is_unexpected_not_a_success() {
    let body = br#"{"errors":[{"message":"The user already has access to this store"}],"data":{"user":{"addUserToStore":{"storeId":"abc123"}}},"errors":[]}"#;
    match decode_mutation(200, None, body, ops::ADD_USER_TO_STORE_RESULT) {
        Err(AccountApiError::Unexpected(m)) => {
            assert!(
                m.starts_with("not one answer: duplicate field `errors`"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        decode::<Value>(200, None, b"[{\"data\":{}}]"),
        Err(AccountApiError::Unexpected("not a JSON object".into()))
    );
}
