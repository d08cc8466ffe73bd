use std::sync::Arc;

use serde_json::json;

use super::store::{FileStore, MemoryStore};
use super::wire::{PatchOperation, PatchRequest};
use super::*;
use crate::clock::ManualClock;

const BASE: &str = "http://gw/scim/v2";

async fn service() -> ScimService {
    ScimService::open(
        Arc::new(MemoryStore),
        Arc::new(ManualClock::at(1_780_000_000)),
    )
    .await
    .unwrap()
}

fn op(op: &str, path: Option<&str>, value: Value) -> PatchOperation {
    PatchOperation {
        op: op.into(),
        path: path.map(str::to_owned),
        value: Some(value),
    }
}

fn patch_req(ops: Vec<PatchOperation>) -> PatchRequest {
    PatchRequest {
        schemas: vec![wire::PATCH_SCHEMA.into()],
        operations: ops,
    }
}

#[tokio::test]
async fn duplicate_user_name_is_a_409_uniqueness() {
    let s = service().await;
    s.create(Kind::User, json!({"userName": "a@x.com"}), BASE)
        .await
        .unwrap();
    let e = s
        .create(Kind::User, json!({"userName": "A@X.com"}), BASE)
        .await
        .unwrap_err();
    assert_eq!((e.status, e.scim_type), (409, Some(ScimType::Uniqueness)));
}

/// Seed `tests/fuzz/corpus/scim_resource/hostile-name-with-spaces`, found by its oracle: a
/// userName stored with surrounding spaces still holds the name, in any case, for a create and
/// for a PUT of another user.
#[tokio::test]
async fn a_user_name_with_spaces_is_still_unique() {
    let s = service().await;
    let (ola, _) = s
        .create(Kind::User, json!({"userName": " ola@corp.example "}), BASE)
        .await
        .unwrap();
    for name in [
        " OLA@CORP.EXAMPLE ",
        "Ola@corp.example",
        "ola@corp.example  ",
    ] {
        let e = s
            .create(Kind::User, json!({"userName": name}), BASE)
            .await
            .unwrap_err();
        assert_eq!(
            (e.status, e.scim_type, e.detail.as_str()),
            (
                409,
                Some(ScimType::Uniqueness),
                format!("userName \"{}\" is already taken", name.trim()).as_str()
            ),
            "{name:?}"
        );
    }
    let (bo, _) = s
        .create(Kind::User, json!({"userName": "bo@corp.example"}), BASE)
        .await
        .unwrap();
    let bo_id = bo["id"].as_str().unwrap();
    let e = s
        .replace(
            Kind::User,
            bo_id,
            json!({"userName": "OLA@corp.example"}),
            None,
            BASE,
        )
        .await
        .unwrap_err();
    assert_eq!((e.status, e.scim_type), (409, Some(ScimType::Uniqueness)));
    // Nothing changed: one user holds the name, the other kept its own.
    assert_eq!(
        s.get(Kind::User, bo_id, BASE).await.unwrap()["userName"],
        "bo@corp.example"
    );
    let ola_id = ola["id"].as_str().unwrap();
    assert_eq!(
        s.get(Kind::User, ola_id, BASE).await.unwrap()["userName"],
        " ola@corp.example "
    );
}

/// Seed `tests/fuzz/corpus/scim_resource/crash-two-spellings`, found by its oracle: with two
/// spellings of userName one was stored as the name and the other matched filters.
#[tokio::test]
async fn an_attribute_given_twice_in_two_cases_is_refused() {
    let s = service().await;
    let e = s
        .create(
            Kind::User,
            json!({"USERNAME": "id", "UserName": "kai@corp.example"}),
            BASE,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.scim_type, e.detail.as_str()),
        (
            400,
            Some(ScimType::InvalidSyntax),
            "the attribute \"UserName\" is given twice (names are case-insensitive)"
        )
    );
    let list = s
        .list(Kind::User, &ListQuery::default(), BASE)
        .await
        .unwrap();
    assert_eq!(list.total_results, 0, "nothing stored");
}

#[tokio::test]
async fn patch_active_false_disables_and_deprovisions() {
    let s = service().await;
    let (u, _) = s
        .create(
            Kind::User,
            json!({"userName": "a@x.com", "externalId": "sub-1"}),
            BASE,
        )
        .await
        .unwrap();
    let id = u["id"].as_str().unwrap();
    assert!(!s.is_deprovisioned("sub-1", Some("a@x.com")).await.unwrap());
    s.patch(
        Kind::User,
        id,
        patch_req(vec![op("Replace", Some("active"), json!("False"))]),
        None,
        BASE,
    )
    .await
    .unwrap();
    assert!(s.is_deprovisioned("sub-1", None).await.unwrap());
    assert!(s.is_deprovisioned("other", Some("A@x.com")).await.unwrap());
}

#[tokio::test]
async fn deleted_user_leaves_a_tombstone_and_leaves_groups() {
    let s = service().await;
    let (u, _) = s
        .create(Kind::User, json!({"userName": "a@x.com"}), BASE)
        .await
        .unwrap();
    let id = u["id"].as_str().unwrap().to_owned();
    let (g, _) = s
        .create(
            Kind::Group,
            json!({"displayName": "bc-merch", "members": [{"value": id}]}),
            BASE,
        )
        .await
        .unwrap();
    let gid = g["id"].as_str().unwrap();
    assert_eq!(
        s.get(Kind::User, &id, BASE).await.unwrap()["groups"][0]["display"],
        "bc-merch"
    );
    s.delete(Kind::User, &id, None).await.unwrap();
    assert!(s.is_deprovisioned("nobody", Some("a@x.com")).await.unwrap());
    assert!(
        s.get(Kind::Group, gid, BASE)
            .await
            .unwrap()
            .get("members")
            .is_none()
    );
    // A rehire with the same address is active again.
    s.create(Kind::User, json!({"userName": "a@x.com"}), BASE)
        .await
        .unwrap();
    assert!(!s.is_deprovisioned("nobody", Some("a@x.com")).await.unwrap());
}

#[tokio::test]
async fn group_member_patches_add_and_remove() {
    let s = service().await;
    let (g, _) = s
        .create(Kind::Group, json!({"displayName": "g"}), BASE)
        .await
        .unwrap();
    let gid = g["id"].as_str().unwrap();
    s.patch(
        Kind::Group,
        gid,
        patch_req(vec![op(
            "add",
            Some("members"),
            json!([{"value": "u1"}, {"value": "u2"}]),
        )]),
        None,
        BASE,
    )
    .await
    .unwrap();
    s.patch(
        Kind::Group,
        gid,
        patch_req(vec![op(
            "add",
            Some("members"),
            json!([{"value": "u2"}, {"value": "u3"}]),
        )]),
        None,
        BASE,
    )
    .await
    .unwrap();
    let (g, _) = s
        .patch(
            Kind::Group,
            gid,
            patch_req(vec![PatchOperation {
                op: "remove".into(),
                path: Some(r#"members[value eq "u1"]"#.into()),
                value: None,
            }]),
            None,
            BASE,
        )
        .await
        .unwrap();
    let vals: Vec<&str> = g["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(vals, ["u2", "u3"]);
    // Azure-style: remove with a value list.
    let (g, _) = s
        .patch(
            Kind::Group,
            gid,
            patch_req(vec![op(
                "Remove",
                Some("members"),
                json!([{"value": "u2"}]),
            )]),
            None,
            BASE,
        )
        .await
        .unwrap();
    assert_eq!(g["members"], json!([{"value": "u3"}]));
}

#[tokio::test]
async fn patch_paths_with_filters_and_extension() {
    let s = service().await;
    let (u, _) = s.create(Kind::User, json!({"userName": "a", "emails": [{"value": "a@w.com", "type": "work"}, {"value": "a@h.com", "type": "home"}]}), BASE).await.unwrap();
    let id = u["id"].as_str().unwrap();
    let (u, _) = s
        .patch(
            Kind::User,
            id,
            patch_req(vec![
                op(
                    "replace",
                    Some(r#"emails[type eq "work"].value"#),
                    json!("new@w.com"),
                ),
                op(
                    "add",
                    Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
                    json!("Merch"),
                ),
                op(
                    "replace",
                    None,
                    json!({"name": {"givenName": "A"}, "displayName": "A B"}),
                ),
            ]),
            None,
            BASE,
        )
        .await
        .unwrap();
    assert_eq!(u["emails"][0]["value"], "new@w.com");
    assert_eq!(u["emails"][1]["value"], "a@h.com");
    assert_eq!(u[wire::ENTERPRISE_SCHEMA]["department"], "Merch");
    assert!(
        u["schemas"]
            .as_array()
            .unwrap()
            .contains(&json!(wire::ENTERPRISE_SCHEMA))
    );
    assert_eq!(u["displayName"], "A B");
    let e = s
        .patch(
            Kind::User,
            id,
            patch_req(vec![op(
                "replace",
                Some(r#"emails[type eq "other"].value"#),
                json!("x"),
            )]),
            None,
            BASE,
        )
        .await
        .unwrap_err();
    assert_eq!(e.scim_type, Some(ScimType::NoTarget));
    let e = s
        .patch(
            Kind::User,
            id,
            patch_req(vec![op("replace", Some("id"), json!("x"))]),
            None,
            BASE,
        )
        .await
        .unwrap_err();
    assert_eq!(e.scim_type, Some(ScimType::Mutability));
}

#[tokio::test]
async fn patch_with_a_multibyte_character_across_byte_four_is_refused_not_a_panic() {
    // Found by the scim_patch fuzz target (tests/fuzz/corpus/scim_patch/crash-urn-slice-*.json):
    // the "urn:" prefix checks of a path and of a value's keys sliced at byte 4, inside a
    // multi-byte character.
    let s = service().await;
    let (u, _) = s
        .create(Kind::User, json!({"userName": "a@x.com"}), BASE)
        .await
        .unwrap();
    let id = u["id"].as_str().unwrap();
    let e = s
        .patch(
            Kind::User,
            id,
            patch_req(vec![op("replace", Some("mem\u{721}'IN+ebers"), json!([]))]),
            None,
            BASE,
        )
        .await
        .unwrap_err();
    assert_eq!((e.status, e.scim_type), (400, Some(ScimType::InvalidPath)));
    let (v, _) = s
        .patch(
            Kind::User,
            id,
            patch_req(vec![op("replace", None, json!({"abc\u{e9}x": "y"}))]),
            None,
            BASE,
        )
        .await
        .unwrap();
    assert_eq!(v["abc\u{e9}x"], "y");
}

#[tokio::test]
async fn if_match_mismatch_is_412_and_match_succeeds() {
    let s = service().await;
    let (u, _) = s
        .create(Kind::User, json!({"userName": "a"}), BASE)
        .await
        .unwrap();
    let id = u["id"].as_str().unwrap();
    let v1 = u["meta"]["version"].as_str().unwrap().to_owned();
    let (u2, _) = s
        .replace(
            Kind::User,
            id,
            json!({"userName": "a", "active": false}),
            Some(&v1),
            BASE,
        )
        .await
        .unwrap();
    assert_ne!(u2["meta"]["version"].as_str().unwrap(), v1);
    let e = s
        .replace(Kind::User, id, json!({"userName": "a"}), Some(&v1), BASE)
        .await
        .unwrap_err();
    assert_eq!(e.status, 412);
    let e = s
        .delete(Kind::User, id, Some("W/\"nope\""))
        .await
        .unwrap_err();
    assert_eq!(e.status, 412);
}

#[tokio::test]
async fn list_pages_up_to_999_and_filters() {
    let s = service().await;
    for i in 0..1200 {
        s.create(
            Kind::User,
            json!({"userName": format!("u{i:04}@x.com"), "active": i % 2 == 0}),
            BASE,
        )
        .await
        .unwrap();
    }
    let q = |f: Option<&str>, start: i64, count: i64| ListQuery {
        filter: f.map(str::to_owned),
        start_index: Some(start),
        count: Some(count),
        ..Default::default()
    };
    let page = s.list(Kind::User, &q(None, 1, 999), BASE).await.unwrap();
    assert_eq!((page.total_results, page.items_per_page), (1200, 999));
    let page2 = s.list(Kind::User, &q(None, 1000, 999), BASE).await.unwrap();
    assert_eq!(page2.items_per_page, 201);
    let mut all: Vec<Value> = page
        .resources
        .into_iter()
        .chain(page2.resources)
        .map(|u| u["id"].clone())
        .collect();
    all.sort_by_key(|v| v.to_string());
    all.dedup();
    assert_eq!(all.len(), 1200, "paging neither skips nor repeats");
    let active = s
        .list(Kind::User, &q(Some("active eq false"), 1, 10), BASE)
        .await
        .unwrap();
    assert_eq!((active.total_results, active.items_per_page), (600, 10));
    let e = s
        .list(Kind::User, &q(Some("userName eq"), 1, 10), BASE)
        .await
        .unwrap_err();
    assert_eq!(e.scim_type, Some(ScimType::InvalidFilter));
}

#[tokio::test]
async fn file_store_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("storegate-scim-{}", uuid::Uuid::new_v4()));
    let clock = Arc::new(ManualClock::at(1_780_000_000));
    let s = ScimService::open(Arc::new(FileStore::open(&dir).unwrap()), clock.clone())
        .await
        .unwrap();
    let (u, _) = s
        .create(Kind::User, json!({"userName": "a@x.com"}), BASE)
        .await
        .unwrap();
    let id = u["id"].as_str().unwrap().to_owned();
    let (keep, _) = s
        .create(Kind::User, json!({"userName": "b@x.com"}), BASE)
        .await
        .unwrap();
    s.delete(Kind::User, &id, None).await.unwrap();
    drop(s);
    let s = ScimService::open(Arc::new(FileStore::open(&dir).unwrap()), clock)
        .await
        .unwrap();
    assert_eq!(
        s.get(Kind::User, keep["id"].as_str().unwrap(), BASE)
            .await
            .unwrap()["userName"],
        "b@x.com"
    );
    assert_eq!(s.get(Kind::User, &id, BASE).await.unwrap_err().status, 404);
    assert!(s.is_deprovisioned("x", Some("a@x.com")).await.unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

/// A shared store where another replica takes `userName` "a@x.com" just before our first commit:
/// that commit is refused as stale, and the refresh that follows brings the other user.
struct RacedStore {
    raced: std::sync::Mutex<bool>,
    commits: std::sync::Mutex<Vec<Vec<store::Write>>>,
}

#[async_trait::async_trait]
impl store::ScimStore for RacedStore {
    async fn load(&self) -> Result<Vec<(Kind, Value)>, store::StoreError> {
        Ok(Vec::new())
    }
    async fn put(&self, _: Kind, _: &str, _: &Value) -> Result<(), store::StoreError> {
        Err(store::StoreError("commit only".into()))
    }
    async fn delete(&self, _: Kind, _: &str) -> Result<(), store::StoreError> {
        Err(store::StoreError("commit only".into()))
    }
    fn shared(&self) -> bool {
        true
    }
    async fn refresh(
        &self,
        seen: Option<&store::Revision>,
    ) -> Result<store::Refresh, store::StoreError> {
        let at = |n| store::Revision {
            epoch: "e".into(),
            number: n,
        };
        Ok(match seen.map(|r| r.number) {
            None => store::Refresh::Full {
                at: at(0),
                items: Vec::new(),
            },
            Some(0) if *self.raced.lock().unwrap() => store::Refresh::Changed {
                at: at(1),
                writes: vec![store::Write {
                    kind: Kind::User,
                    id: "other".into(),
                    value: Some(json!({"id": "other", "userName": "a@x.com"})),
                }],
            },
            Some(_) => store::Refresh::Current,
        })
    }
    async fn commit(
        &self,
        seen: Option<&store::Revision>,
        writes: &[store::Write],
    ) -> Result<store::Commit, store::StoreError> {
        let mut raced = self.raced.lock().unwrap();
        if !*raced {
            *raced = true;
            return Ok(store::Commit::Stale);
        }
        self.commits.lock().unwrap().push(writes.to_vec());
        let n = seen.map_or(0, |r| r.number) + 1;
        Ok(store::Commit::Done(Some(store::Revision {
            epoch: "e".into(),
            number: n,
        })))
    }
}

#[tokio::test]
async fn a_change_refused_as_stale_is_decided_again_on_fresh_data() {
    let st = Arc::new(RacedStore {
        raced: std::sync::Mutex::new(false),
        commits: std::sync::Mutex::new(Vec::new()),
    });
    let s = ScimService::open(st.clone(), Arc::new(ManualClock::at(1_780_000_000)))
        .await
        .unwrap();
    // The other replica's user arrived between our decision and our commit: now a clash.
    let e = s
        .create(Kind::User, json!({"userName": "A@x.com"}), BASE)
        .await
        .unwrap_err();
    assert_eq!((e.status, e.scim_type), (409, Some(ScimType::Uniqueness)));
    assert!(st.commits.lock().unwrap().is_empty(), "nothing stored");
    // Another name goes through, once, on top of the other replica's change.
    let (u, _) = s
        .create(Kind::User, json!({"userName": "b@x.com"}), BASE)
        .await
        .unwrap();
    assert_eq!(st.commits.lock().unwrap().len(), 1);
    let list = s
        .list(Kind::User, &ListQuery::default(), BASE)
        .await
        .unwrap();
    assert_eq!(list.total_results, 2);
    assert_eq!(
        s.get(Kind::User, u["id"].as_str().unwrap(), BASE)
            .await
            .unwrap()["userName"],
        "b@x.com"
    );
}

#[tokio::test]
async fn duplicate_group_display_name_is_a_409_uniqueness() {
    let s = service().await;
    let (g, _) = s
        .create(Kind::Group, json!({"displayName": "bc-support"}), BASE)
        .await
        .unwrap();
    let e = s
        .create(Kind::Group, json!({"displayName": "BC-Support"}), BASE)
        .await
        .unwrap_err();
    assert_eq!((e.status, e.scim_type), (409, Some(ScimType::Uniqueness)));
    // Replacing a group with its own name is no clash.
    let id = g["id"].as_str().unwrap();
    s.replace(
        Kind::Group,
        id,
        json!({"displayName": "bc-support"}),
        None,
        BASE,
    )
    .await
    .unwrap();
}

/// Redis on a port nobody listens on: every read and write is a 503, and the leaver check is an
/// error (callers refuse), never "not deprovisioned".
#[tokio::test]
async fn an_unreachable_shared_store_fails_closed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = crate::secret::Secret::new(format!("redis://127.0.0.1:{port}/"));
    let handle =
        crate::store::RedisHandle::new(&url, std::time::Duration::from_millis(300)).unwrap();
    let st = Arc::new(super::redis_store::RedisScimStore::new(handle, "t:"));
    // Opening does not touch the shared store: the gateway starts while Redis is down.
    let s = ScimService::open(st, Arc::new(ManualClock::at(1_780_000_000)))
        .await
        .unwrap();
    let e = s
        .is_deprovisioned("sub-1", Some("a@x.com"))
        .await
        .unwrap_err();
    assert_eq!(e.status, 503);
    let e = s
        .create(Kind::User, json!({"userName": "a@x.com"}), BASE)
        .await
        .unwrap_err();
    assert_eq!(e.status, 503);
    let e = s
        .list(Kind::User, &ListQuery::default(), BASE)
        .await
        .unwrap_err();
    assert_eq!(e.status, 503);
    assert_eq!(s.snapshot().await.unwrap_err().status, 503);
}

fn rev(epoch: &str, number: u64) -> store::Revision {
    store::Revision {
        epoch: epoch.into(),
        number,
    }
}

fn user_write(id: &str, active: bool) -> store::Write {
    store::Write {
        kind: Kind::User,
        id: id.into(),
        value: Some(json!({"id": id, "externalId": id, "userName": id, "active": active})),
    }
}

/// Two leaver checks read refreshes from the same revision without the lock; the one that read
/// later (and saw the deactivation) is applied first. The earlier answer, older than the copy
/// by then, must not bring the user back to active.
#[test]
fn a_refresh_older_than_the_copy_is_not_applied_over_it() {
    let mut c = Cache::new(ScimData::default(), Some(rev("e", 1)));
    c.apply(&user_write("u", true));
    let later = store::Refresh::Changed {
        at: rev("e", 3),
        writes: vec![user_write("u", false)],
    };
    let earlier = store::Refresh::Changed {
        at: rev("e", 2),
        writes: vec![user_write("u", true)],
    };
    assert!(c.take(Some(&rev("e", 1)), later));
    assert!(
        c.take(Some(&rev("e", 1)), earlier),
        "ordered: no second trip"
    );
    assert_eq!(c.seen, Some(rev("e", 3)));
    assert!(
        c.people.is_deprovisioned(&c.data, "u", None),
        "still a leaver"
    );
    // A newer answer read from an older revision is applied: it holds the latest of everything
    // changed since then.
    let newest = store::Refresh::Changed {
        at: rev("e", 4),
        writes: vec![user_write("u", true), user_write("v", false)],
    };
    assert!(c.take(Some(&rev("e", 2)), newest));
    assert_eq!(c.seen, Some(rev("e", 4)));
    assert!(!c.people.is_deprovisioned(&c.data, "u", None));
    assert!(c.people.is_deprovisioned(&c.data, "v", None));
}

/// When Redis was emptied meanwhile (a new epoch) the two answers cannot be ordered: the caller
/// is told to refresh again under the lock, and the copy is left as it is.
#[test]
fn a_refresh_from_another_epoch_than_the_copy_is_not_taken() {
    let mut c = Cache::new(ScimData::default(), Some(rev("new", 1)));
    let old = store::Refresh::Full {
        at: rev("old", 9),
        items: vec![(
            Kind::User,
            json!({"id": "u", "externalId": "u", "active": true}),
        )],
    };
    assert!(!c.take(Some(&rev("old", 8)), old));
    assert_eq!(c.seen, Some(rev("new", 1)));
    assert!(c.data.users.is_empty());
    // From the copy's own revision, any answer is taken as it is.
    let full = store::Refresh::Full {
        at: rev("other", 1),
        items: vec![(
            Kind::User,
            json!({"id": "u", "externalId": "u", "active": false}),
        )],
    };
    assert!(c.take(Some(&rev("new", 1)), full));
    assert!(c.people.is_deprovisioned(&c.data, "u", None));
}

/// Issue 10: a list filters the stored resources before it renders only its page. Whatever the
/// filter reads, including what rendering adds (a user's `groups`, `meta.location`), the answer
/// is the one of filtering every rendered resource.
#[tokio::test]
async fn a_filtered_list_over_many_users_returns_exactly_the_matching_ones() {
    let s = service().await;
    let mut ids = Vec::new();
    for i in 0..2000 {
        let (u, _) = s
            .create(
                Kind::User,
                json!({
                    "userName": format!("u{i:04}@x.com"),
                    "active": i % 3 != 0,
                    "title": if i % 5 == 0 { "Buyer" } else { "Clerk" },
                    "emails": [{"value": format!("u{i}@{}", if i % 2 == 0 { "a.com" } else { "b.com" }), "type": "work"}],
                }),
                BASE,
            )
            .await
            .unwrap();
        ids.push(u["id"].as_str().unwrap().to_owned());
    }
    for g in 0..10 {
        let members: Vec<Value> = ids
            .iter()
            .skip(g)
            .step_by(10)
            .map(|id| json!({"value": id}))
            .collect();
        s.create(
            Kind::Group,
            json!({"displayName": format!("g-{g}"), "members": members}),
            BASE,
        )
        .await
        .unwrap();
    }
    let list = |f: Option<&str>, start: i64, count: i64| ListQuery {
        filter: f.map(str::to_owned),
        start_index: Some(start),
        count: Some(count),
        ..Default::default()
    };
    // The reference: every user rendered (two full pages), then filtered.
    let mut everyone = s
        .list(Kind::User, &list(None, 1, 999), BASE)
        .await
        .unwrap()
        .resources;
    everyone.extend(
        s.list(Kind::User, &list(None, 1000, 999), BASE)
            .await
            .unwrap()
            .resources,
    );
    everyone.extend(
        s.list(Kind::User, &list(None, 1999, 999), BASE)
            .await
            .unwrap()
            .resources,
    );
    assert_eq!(everyone.len(), 2000);
    let target = &ids[1234];
    for raw in [
        r#"userName sw "u12""#.to_owned(),
        r#"title eq "buyer" and active eq false"#.to_owned(),
        r#"emails[type eq "work" and value ew "@b.com"]"#.to_owned(),
        r#"groups.display eq "g-7""#.to_owned(),
        r#"groups[display eq "g-3"] and not (title eq "Clerk")"#.to_owned(),
        format!("meta.location ew \"/Users/{target}\""),
        r#"meta.created pr"#.to_owned(),
        r#"userName eq "nobody@x.com""#.to_owned(),
    ] {
        let f = filter::parse(&raw).unwrap();
        let want: Vec<&Value> = everyone.iter().filter(|u| filter::matches(&f, u)).collect();
        let got = s
            .list(Kind::User, &list(Some(&raw), 1, 999), BASE)
            .await
            .unwrap();
        assert_eq!(got.total_results, want.len(), "total for {raw}");
        let got_ids: Vec<&Value> = got.resources.iter().map(|u| &u["id"]).collect();
        let want_ids: Vec<&Value> = want.iter().take(999).map(|u| &u["id"]).collect();
        assert_eq!(got_ids, want_ids, "resources for {raw}");
        // What is returned is rendered in full.
        for u in &got.resources {
            assert!(u.pointer("/meta/location").is_some(), "{raw}: {u}");
        }
    }
    // The ones a reader would check by eye.
    let g7 = s
        .list(
            Kind::User,
            &list(Some(r#"groups.display eq "g-7""#), 1, 999),
            BASE,
        )
        .await
        .unwrap();
    assert_eq!(g7.total_results, 200);
    assert!(
        g7.resources
            .iter()
            .all(|u| u["groups"][0]["display"] == "g-7")
    );
    let one = s
        .list(
            Kind::User,
            &list(
                Some(&format!("meta.location ew \"/Users/{target}\"")),
                1,
                10,
            ),
            BASE,
        )
        .await
        .unwrap();
    assert_eq!(one.total_results, 1);
    assert_eq!(one.resources[0]["id"], json!(target));
}

/// Issue 10: a list no longer holds the lock that every sign-in's leaver check takes while it
/// filters and renders. The list is parked after it took the data; the leaver check must
/// answer meanwhile (bounded wait: with the lock held it would wait for the list forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaver_check_answers_while_a_list_is_being_filtered_and_rendered() {
    use std::time::Duration;
    let s = Arc::new(service().await);
    for i in 0..300 {
        s.create(
            Kind::User,
            json!({"userName": format!("u{i}@x.com"), "externalId": format!("sub-{i}"), "active": i != 7}),
            BASE,
        )
        .await
        .unwrap();
    }
    let (arrived_tx, arrived) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    *s.list_gate.lock() = Some(ListGate {
        arrived: arrived_tx,
        go: go_rx,
    });
    let lister = Arc::clone(&s);
    let listing = tokio::spawn(async move {
        let q = ListQuery {
            filter: Some("active eq true".into()),
            count: Some(999),
            ..Default::default()
        };
        lister.list(Kind::User, &q, BASE).await
    });
    tokio::task::spawn_blocking(move || arrived.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the list reached its filtering step");
    let check = tokio::time::timeout(Duration::from_secs(60), s.is_deprovisioned("sub-7", None))
        .await
        .expect("the leaver check answered while the list was parked");
    assert!(check.unwrap(), "sub-7 is disabled");
    go.send(()).unwrap();
    let page = listing.await.unwrap().unwrap();
    assert_eq!(page.total_results, 299);
}

/// Issue 15: uniqueness and `eq` filters read the index, which follows renames: the old name is
/// free at once, the new one taken, in any letter case.
#[tokio::test]
async fn a_renamed_user_frees_the_old_user_name_and_takes_the_new_one() {
    let s = service().await;
    let (a, _) = s
        .create(Kind::User, json!({"userName": "a@x.com"}), BASE)
        .await
        .unwrap();
    s.create(Kind::User, json!({"userName": "b@x.com"}), BASE)
        .await
        .unwrap();
    let id = a["id"].as_str().unwrap();
    let e = s
        .replace(Kind::User, id, json!({"userName": "B@x.com"}), None, BASE)
        .await
        .unwrap_err();
    assert_eq!((e.status, e.scim_type), (409, Some(ScimType::Uniqueness)));
    s.replace(Kind::User, id, json!({"userName": "c@x.com"}), None, BASE)
        .await
        .unwrap();
    s.create(Kind::User, json!({"userName": "A@x.com"}), BASE)
        .await
        .unwrap();
    let e = s
        .create(Kind::User, json!({"userName": "C@X.COM"}), BASE)
        .await
        .unwrap_err();
    assert_eq!((e.status, e.scim_type), (409, Some(ScimType::Uniqueness)));
    let q = |f: &str| ListQuery {
        filter: Some(f.to_owned()),
        ..Default::default()
    };
    let by_new = s
        .list(Kind::User, &q(r#"userName eq "C@x.COM""#), BASE)
        .await
        .unwrap();
    assert_eq!(by_new.total_results, 1);
    assert_eq!(by_new.resources[0]["id"], json!(id));
    let by_old = s
        .list(Kind::User, &q(r#"userName eq "a@x.com""#), BASE)
        .await
        .unwrap();
    assert_eq!(by_old.total_results, 1);
    assert_ne!(by_old.resources[0]["id"], json!(id));
}

/// Issue 15: a group of thousands of members is read and changed one member at a time, and a
/// member's `groups` and deletion follow the membership index.
#[tokio::test]
async fn a_large_group_keeps_its_members_through_single_member_patches() {
    let s = service().await;
    let mut ids = Vec::new();
    for i in 0..3000 {
        let (u, _) = s
            .create(Kind::User, json!({"userName": format!("u{i}@x.com")}), BASE)
            .await
            .unwrap();
        ids.push(u["id"].as_str().unwrap().to_owned());
    }
    let members: Vec<Value> = ids[..2999].iter().map(|id| json!({"value": id})).collect();
    let (g, _) = s
        .create(
            Kind::Group,
            json!({"displayName": "big", "members": members}),
            BASE,
        )
        .await
        .unwrap();
    let gid = g["id"].as_str().unwrap();
    let last = &ids[2999];
    s.patch(
        Kind::Group,
        gid,
        patch_req(vec![op("add", Some("members"), json!([{"value": last}]))]),
        None,
        BASE,
    )
    .await
    .unwrap();
    let u = s.get(Kind::User, last, BASE).await.unwrap();
    assert_eq!(u["groups"][0]["value"], json!(gid));
    s.patch(
        Kind::Group,
        gid,
        patch_req(vec![op(
            "remove",
            Some("members"),
            json!([{"value": &ids[5]}]),
        )]),
        None,
        BASE,
    )
    .await
    .unwrap();
    assert!(
        s.get(Kind::User, &ids[5], BASE)
            .await
            .unwrap()
            .get("groups")
            .is_none()
    );
    s.delete(Kind::User, &ids[7], None).await.unwrap();
    let g = s.get(Kind::Group, gid, BASE).await.unwrap();
    let have: Vec<&str> = g["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(have.len(), 2998);
    assert!(!have.contains(&ids[5].as_str()) && !have.contains(&ids[7].as_str()));
    assert!(have.contains(&last.as_str()));
    let q = ListQuery {
        filter: Some(format!("members.value eq \"{last}\"")),
        ..Default::default()
    };
    let found = s.list(Kind::Group, &q, BASE).await.unwrap();
    assert_eq!(found.total_results, 1);
}
