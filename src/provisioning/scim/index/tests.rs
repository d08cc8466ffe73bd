//! The index against the scan it stands in for: the same list answer for any filter, and the
//! same index whether built at once or kept in step with any sequence of writes.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::provisioning::scim::ScimService;

/// A small vocabulary, so that values collide often: letter case, spaces, an address, an
/// RFC 3339 instant (compared as an instant by the filter), a non-ASCII letter.
const WORDS: [&str; 8] = [
    "ann",
    "Ann",
    " ann ",
    "bob@x.com",
    "BOB@x.COM",
    "2026-01-01T00:00:00Z",
    "Straße",
    "STRASSE",
];
const CREATED: [&str; 3] = [
    "2026-01-01T00:00:00Z",
    "2026-01-02T00:00:00Z",
    "2026-01-01T00:00:00+00:00",
];
const USERS: usize = 6;
const BASE: &str = "http://gw/scim/v2";

fn user(i: usize, name: usize, ext: Option<usize>, email: Option<usize>, created: usize) -> Value {
    let mut v = json!({
        "id": format!("u{i}"),
        "userName": WORDS[name],
        "active": i.is_multiple_of(2),
        "meta": {"created": CREATED[created]},
    });
    if let Some(x) = ext {
        v["externalId"] = json!(WORDS[x]);
    }
    if let Some(e) = email {
        v["emails"] =
            json!([{"value": WORDS[e], "type": "work"}, {"value": format!("u{i}@alias.example")}]);
    }
    v
}

fn group(i: usize, name: usize, ext: Option<usize>, members: Vec<usize>, created: usize) -> Value {
    let mut v = json!({
        "id": format!("g{i}"),
        "displayName": WORDS[name],
        "meta": {"created": CREATED[created]},
    });
    if let Some(x) = ext {
        v["externalId"] = json!(WORDS[x]);
    }
    if !members.is_empty() {
        v["members"] = members.into_iter().map(member).collect();
    }
    v
}

/// A member: mostly `{"value": "u{m}"}`, sometimes one whose id differs only in letter case
/// (one `members.value` key for two ids), one with a second spelling of `value`, or one whose
/// `value` is not a string (both kept out of the compact member list).
fn member(m: usize) -> Value {
    let (form, m) = (m / (USERS + 1), m % (USERS + 1));
    match form {
        0 => json!({"value": format!("u{m}")}),
        1 => json!({"value": format!("U{m}"), "display": "upper"}),
        2 => json!({"value": format!("u{m}"), "Value": format!("x{m}")}),
        _ => json!({"value": m}),
    }
}

fn user_value() -> impl Strategy<Value = (usize, Option<usize>, Option<usize>, usize)> {
    (
        0..WORDS.len(),
        proptest::option::of(0..WORDS.len()),
        proptest::option::of(0..WORDS.len()),
        0..CREATED.len(),
    )
}

fn group_value() -> impl Strategy<Value = (usize, Option<usize>, Vec<usize>, usize)> {
    (
        0..WORDS.len(),
        proptest::option::of(0..WORDS.len()),
        proptest::collection::vec(
            prop_oneof![6 => 0..2 * (USERS + 1), 1 => 0..4 * (USERS + 1)],
            0..5,
        ),
        0..CREATED.len(),
    )
}

fn data() -> impl Strategy<Value = ScimData> {
    (
        proptest::collection::vec(user_value(), 0..USERS),
        proptest::collection::vec(group_value(), 0..4),
    )
        .prop_map(|(users, groups)| {
            let mut items = Vec::new();
            for (i, (n, x, e, c)) in users.into_iter().enumerate() {
                items.push((Kind::User, user(i, n, x, e, c)));
            }
            for (i, (n, x, m, c)) in groups.into_iter().enumerate() {
                items.push((Kind::Group, group(i, n, x, m, c)));
            }
            ScimData::from_resources(items)
        })
}

/// A word in some letter case, as a client might send it.
fn word() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            (0..WORDS.len()).prop_map(|i| WORDS[i].to_owned()),
            (0..USERS + 1).prop_map(|i| format!("u{i}")),
            (0..4usize).prop_map(|i| format!("g{i}")),
        ],
        0..3usize,
    )
        .prop_map(|(w, case)| match case {
            0 => w,
            1 => w.to_uppercase(),
            _ => w.to_lowercase(),
        })
}

/// Filters the index answers (`eq` on indexed attributes, `id`) and ones it leaves to the scan.
fn leaf() -> impl Strategy<Value = String> {
    let attrs = prop_oneof![
        Just("userName"),
        Just("USERNAME"),
        Just("externalId"),
        Just("emails.value"),
        Just("emails"),
        Just("displayName"),
        Just("members.value"),
        Just("id"),
        Just("urn:ietf:params:scim:schemas:core:2.0:User:externalId"),
        Just("groups.display"),
        Just("meta.created"),
    ];
    let ops = prop_oneof![Just("eq"), Just("eq"), Just("eq"), Just("ne"), Just("sw")];
    (attrs, ops, word()).prop_map(|(a, op, w)| format!("{a} {op} {}", json!(w)))
}

fn filter_text() -> impl Strategy<Value = String> {
    leaf().prop_recursive(3, 8, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) and ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or ({b})")),
            inner.prop_map(|a| format!("not ({a})")),
        ]
    })
}

/// The reference: every resource (rendered first when the filter reads what rendering adds),
/// filtered, ordered by creation time then id.
fn scanned(data: &ScimData, kind: Kind, f: &Filter) -> Vec<String> {
    // A user's groups as rendering read them before the index: every group, `is_member`.
    let groups = |v: &Value| -> Vec<(String, Value)> {
        if kind != Kind::User {
            return Vec::new();
        }
        let id = v["id"].as_str().unwrap_or_default();
        data.groups
            .iter()
            .map(|(gid, g)| (gid, g.value()))
            .filter(|(_, g)| crate::provisioning::scim::is_member(g, id))
            .map(|(gid, g)| {
                (
                    gid.clone(),
                    g.get("displayName").cloned().unwrap_or(Value::Null),
                )
            })
            .collect()
    };
    let decoded: Vec<(&String, Value)> = data
        .map(kind)
        .iter()
        .map(|(id, r)| (id, r.value()))
        .collect();
    let mut hits: Vec<(&String, &Value)> = decoded
        .iter()
        .map(|(id, v)| (*id, v))
        .filter(|(_, v)| {
            if filter::reads_rendered(f, kind == Kind::User) {
                let shown = ScimService::render_taken(kind, (*v).clone(), groups(v), BASE);
                filter::matches(f, &shown)
            } else {
                filter::matches(f, v)
            }
        })
        .collect();
    hits.sort_by(|a, b| {
        let created = |v: &Value| {
            v.pointer("/meta/created")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        created(a.1).cmp(&created(b.1)).then(a.0.cmp(b.0))
    });
    hits.into_iter().map(|(id, _)| id.clone()).collect()
}

fn ids_of(page: Vec<(Value, Vec<(String, Value)>)>) -> Vec<String> {
    page.into_iter()
        .map(|(v, _)| v["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Everything the index holds, without the empty entries removals may leave behind.
fn dump(index: &ResourceIndex) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let mut out = BTreeMap::new();
    for ((kind, attr), m) in &index.by_value {
        for (k, ids) in m {
            if !ids.is_empty() {
                out.insert(
                    format!("{kind:?}/{attr:?}/{k}"),
                    ids.iter().cloned().collect(),
                );
            }
        }
    }
    for (uid, gids) in &index.groups_of {
        out.insert(format!("member/{uid}"), gids.iter().cloned().collect());
    }
    let order = Kind::ALL
        .iter()
        .flat_map(|k| index.in_order(*k).map(move |id| format!("{k:?}/{id}")))
        .collect();
    (out, order)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_list_answers_every_filter_as_the_scan_does(
        data in data(),
        raw in filter_text(),
        start in 1..4usize,
        count in 0..4usize,
    ) {
        let index = ResourceIndex::build(&data);
        let f = filter::parse(&raw).expect("generated filters parse");
        for kind in [Kind::User, Kind::Group] {
            let want = scanned(&data, kind, &f);
            // The index narrows only to a superset of the answer.
            if let Some(c) = index.candidates(&data, kind, &f) {
                for id in &want {
                    prop_assert!(c.contains(id), "{raw}: {id} missing from the candidates");
                }
            }
            let (total, all) =
                ScimService::select(&data, &index, kind, Some(&f), 1, usize::MAX, BASE);
            prop_assert_eq!(total, want.len(), "total for {}", raw);
            prop_assert_eq!(ids_of(all), want.clone(), "{}", raw);
            let (_, page) = ScimService::select(&data, &index, kind, Some(&f), start, count, BASE);
            let want_page: Vec<String> = want.into_iter().skip(start - 1).take(count).collect();
            prop_assert_eq!(ids_of(page), want_page, "page of {}", raw);
        }
    }

    #[test]
    fn the_index_kept_in_step_with_writes_is_the_index_built_from_the_result(
        writes in proptest::collection::vec(
            (
                prop_oneof![Just(Kind::User), Just(Kind::Group), Just(Kind::Tombstone)],
                0..4usize,
                proptest::option::of((user_value(), group_value())),
            ),
            0..24,
        ),
    ) {
        let mut data = ScimData::default();
        let mut index = ResourceIndex::default();
        for (kind, i, value) in writes {
            let value = value.map(|(u, g)| match kind {
                Kind::Group => group(i, g.0, g.1, g.2, g.3),
                _ => user(i, u.0, u.1, u.2, u.3),
            });
            let id = if kind == Kind::Group { format!("g{i}") } else { format!("u{i}") };
            let w = Write { kind, id, value };
            index.apply(&data, &w);
            data.apply(&w);
        }
        prop_assert_eq!(dump(&index), dump(&ResourceIndex::build(&data)));
    }
}

#[test]
fn an_unfiltered_page_is_read_in_list_order() {
    let data = ScimData::from_resources(vec![
        (Kind::User, user(0, 0, None, None, 1)),
        (Kind::User, user(1, 1, None, None, 0)),
        (Kind::User, user(2, 3, None, None, 0)),
    ]);
    let index = ResourceIndex::build(&data);
    let (total, page) = ScimService::select(&data, &index, Kind::User, None, 2, 5, BASE);
    assert_eq!(total, 3);
    assert_eq!(ids_of(page), ["u2", "u0"]);
}

#[test]
fn eq_on_each_indexed_attribute_is_answered_from_the_index() {
    let data = ScimData::from_resources(vec![
        (Kind::User, user(0, 3, Some(0), Some(6), 0)),
        (Kind::Group, group(0, 2, Some(1), vec![0], 0)),
    ]);
    let index = ResourceIndex::build(&data);
    for (kind, raw, want) in [
        (Kind::User, r#"userName eq "BOB@X.com""#, vec!["u0"]),
        (Kind::User, r#"externalId eq "ann""#, vec!["u0"]),
        // caseExact: another letter case is another externalId.
        (Kind::User, r#"externalId eq "ANN""#, vec![]),
        (Kind::User, r#"emails.value eq "straße""#, vec!["u0"]),
        (Kind::User, r#"id eq "u0""#, vec!["u0"]),
        (Kind::Group, r#"displayName eq " ANN ""#, vec!["g0"]),
        (Kind::Group, r#"members.value eq "U0""#, vec!["g0"]),
        (
            Kind::Group,
            r#"externalId eq "Ann" and displayName eq " ann ""#,
            vec!["g0"],
        ),
        (
            Kind::Group,
            r#"externalId eq "Ann" or displayName eq "nobody""#,
            vec!["g0"],
        ),
    ] {
        let f = filter::parse(raw).unwrap();
        let c = index
            .candidates(&data, kind, &f)
            .unwrap_or_else(|| panic!("{raw} is answered from the index"));
        let got: Vec<&str> = c
            .into_iter()
            .filter(|id| filter::matches(&f, &data.map(kind)[*id].value()))
            .map(String::as_str)
            .collect();
        assert_eq!(got, want, "{raw}");
    }
    // Left to the scan: other operators, an instant, a schema URN, `or` with a scanned side.
    for (kind, raw) in [
        (Kind::User, r#"userName sw "bob""#),
        (Kind::User, r#"userName eq "2026-01-01T00:00:00Z""#),
        (
            Kind::User,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bob@x.com""#,
        ),
        (Kind::User, r#"userName eq "a" or active eq true"#),
        (Kind::Group, r#"not (displayName eq "ann")"#),
    ] {
        let f = filter::parse(raw).unwrap();
        assert!(index.candidates(&data, kind, &f).is_none(), "{raw}");
    }
}

proptest! {
    /// The head-and-tail shortcut of `id_diff` answers what comparing the two lists answers,
    /// duplicates and all, in list order.
    #[test]
    fn id_diff_is_the_set_difference(
        common in proptest::collection::vec(0..12u8, 0..40),
        cut in 0..40usize,
        take_out in proptest::collection::vec(0..40usize, 0..3),
        put_in in proptest::collection::vec(0..12u8, 0..4),
    ) {
        let name = |x: &u8| format!("u{x}");
        let before: Vec<String> = common.iter().map(name).collect();
        let mut after = before.clone();
        for i in take_out {
            if i < after.len() {
                after.remove(i);
            }
        }
        let at = cut.min(after.len());
        for (n, x) in put_in.iter().enumerate() {
            after.insert(at + n, name(x));
        }
        let (b, a): (Vec<&str>, Vec<&str>) = (
            before.iter().map(String::as_str).collect(),
            after.iter().map(String::as_str).collect(),
        );
        let (added, removed) = id_diff(&b, &a);
        // Each once, in the order of its list.
        let only = |list: &[&str], other: &[&str]| {
            let mut out: Vec<String> = Vec::new();
            for x in list {
                if !other.contains(x) && !out.iter().any(|o| o == x) {
                    out.push((*x).to_owned());
                }
            }
            out
        };
        let (added, removed): (Vec<String>, Vec<String>) = (
            added.into_iter().map(str::to_owned).collect(),
            removed.into_iter().map(str::to_owned).collect(),
        );
        prop_assert_eq!(added, only(&a, &b));
        prop_assert_eq!(removed, only(&b, &a));
    }
}
