//! PATCH (RFC 7644 §3.5.2) applied to a resource's JSON. Pure.
//!
//! Paths: `attr`, `attr.sub`, `urn:...:attr[.sub]`, `attr[filter]`, `attr[filter].sub`. Operation
//! names are case-insensitive. `remove` of `members` with a `value` (one object or a list, as Entra
//! ID and some Identity Manager policies send) removes only those members; only a `remove` with
//! neither a value nor a filter clears the attribute.

use serde_json::{Map, Value};

use super::ScimError;
use super::filter::{self, AttrPath, Filter};
use super::wire::{PatchOperation, ScimType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

struct PatchPath {
    attr: AttrPath,
    filter: Option<Filter>,
    /// The sub-attribute after a filter: `emails[type eq "work"].value`.
    sub_after: Option<String>,
}

fn bad_path(detail: impl Into<String>) -> ScimError {
    ScimError::bad(ScimType::InvalidPath, detail)
}

fn parse_path(raw: &str) -> Result<PatchPath, ScimError> {
    let raw = raw.trim();
    match raw.find('[') {
        None => Ok(PatchPath {
            attr: filter::parse_attr_path(raw).map_err(bad_path)?,
            filter: None,
            sub_after: None,
        }),
        Some(open) => {
            let close = raw
                .rfind(']')
                .filter(|c| *c > open)
                .ok_or_else(|| bad_path(format!("\"{raw}\": missing \"]\"")))?;
            let attr = filter::parse_attr_path(&raw[..open]).map_err(bad_path)?;
            if attr.sub.is_some() {
                return Err(bad_path(format!(
                    "\"{raw}\": a filter follows a simple attribute"
                )));
            }
            let f = filter::parse(&raw[open + 1..close])
                .map_err(|e| ScimError::bad(ScimType::InvalidFilter, e.to_string()))?;
            let rest = &raw[close + 1..];
            let sub_after = match rest.strip_prefix('.') {
                Some(s) if !s.is_empty() => Some(s.to_owned()),
                None if rest.is_empty() => None,
                _ => return Err(bad_path(format!("\"{raw}\": unexpected text after \"]\""))),
            };
            Ok(PatchPath {
                attr,
                filter: Some(f),
                sub_after,
            })
        }
    }
}

/// The key of `obj` equal to `name` ignoring case, or `name` itself.
fn key_of(obj: &Map<String, Value>, name: &str) -> String {
    obj.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_owned())
}

fn as_object(v: &mut Value) -> Result<&mut Map<String, Value>, ScimError> {
    v.as_object_mut().ok_or_else(|| {
        ScimError::bad(
            ScimType::InvalidValue,
            "the target is not a complex attribute",
        )
    })
}

/// The object the path's attribute lives in (the resource, or its extension object, created if
/// missing when `create`).
fn container<'a>(
    resource: &'a mut Value,
    path: &AttrPath,
    create: bool,
) -> Result<Option<&'a mut Map<String, Value>>, ScimError> {
    let obj = as_object(resource)?;
    match &path.urn {
        None => Ok(Some(obj)),
        Some(urn)
            if urn.eq_ignore_ascii_case(super::wire::USER_SCHEMA)
                || urn.eq_ignore_ascii_case(super::wire::GROUP_SCHEMA) =>
        {
            Ok(Some(obj))
        }
        Some(urn) => {
            let k = key_of(obj, urn);
            if !obj.contains_key(&k) {
                if !create {
                    return Ok(None);
                }
                obj.insert(k.clone(), Value::Object(Map::new()));
            }
            match obj.get_mut(&k) {
                Some(v) => as_object(v).map(Some),
                None => Ok(None),
            }
        }
    }
}

fn same_member(a: &Value, b: &Value) -> bool {
    match (filter::get_ci(a, "value"), filter::get_ci(b, "value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// What [`same_member`] compares, as a hashable key, for values whose `value` is a string: two
/// such are the same member exactly when their keys are equal. Anything else (no `value`, or a
/// complex one) has no key and is compared one by one, as before.
fn member_key(v: &Value) -> Option<&str> {
    filter::get_ci(v, "value").and_then(Value::as_str)
}

/// The values of a multi-valued attribute, for asking "is this one already there" without
/// comparing against each (a group of 20,000 members gets members added and removed one PATCH
/// at a time, and a PATCH may name thousands).
struct Present<'a> {
    keyed: std::collections::HashSet<&'a str>,
    unkeyed: Vec<&'a Value>,
}

impl<'a> Present<'a> {
    fn of(values: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut p = Present {
            keyed: Default::default(),
            unkeyed: Vec::new(),
        };
        for v in values {
            match member_key(v) {
                Some(k) => {
                    p.keyed.insert(k);
                }
                None => p.unkeyed.push(v),
            }
        }
        p
    }

    /// Whether any value held is [`same_member`] as `v`.
    fn holds(&self, v: &Value) -> bool {
        match member_key(v) {
            Some(k) => self.keyed.contains(k),
            None => self.unkeyed.iter().any(|h| same_member(h, v)),
        }
    }
}

/// Appends the values not already held (by [`same_member`]), in order. What to take is decided
/// first, over borrowed keys, so that the ids of a big group are not copied.
fn append_new(have: &mut Vec<Value>, new: Vec<Value>) {
    let take: Vec<bool> = {
        let mut keys: std::collections::HashSet<&str> =
            have.iter().filter_map(member_key).collect();
        let mut taken: Vec<&Value> = Vec::new();
        let mut take = Vec::with_capacity(new.len());
        for v in &new {
            let held = match member_key(v) {
                Some(k) => !keys.insert(k),
                None => have
                    .iter()
                    .chain(taken.iter().copied())
                    .any(|h| same_member(h, v)),
            };
            if !held {
                taken.push(v);
            }
            take.push(!held);
        }
        take
    };
    have.extend(
        new.into_iter()
            .zip(take)
            .filter(|(_, t)| *t)
            .map(|(v, _)| v),
    );
}

/// `remove` of a whole attribute path. Without a value (RFC 7644 §3.5.2.2: "no filter and no
/// value") the attribute is cleared. With a value, only the values it names go: Entra ID and
/// Identity Manager send `{"value": id}` or `[{"value": id}, ...]` for `members` and expect the
/// other members to stay. Clearing the group for those (the old reading) was silent data loss.
fn remove_values(obj: &mut Map<String, Value>, key: &str, value: Value) {
    let gone = match value {
        Value::Null => {
            obj.remove(key);
            return;
        }
        Value::Array(list) => list,
        one => vec![one],
    };
    match obj.get_mut(key) {
        Some(Value::Array(have)) => {
            let gone = Present::of(&gone);
            have.retain(|h| !gone.holds(h));
            if have.is_empty() {
                obj.remove(key);
            }
        }
        // A single-valued attribute goes only when the value named is the one it holds.
        Some(have) if gone.iter().any(|g| same_member(have, g)) => {
            obj.remove(key);
        }
        _ => {}
    }
}

/// `add` of one attribute: multi-valued values are appended (no duplicates), complex values merged,
/// anything else replaced.
fn add_value(obj: &mut Map<String, Value>, name: &str, value: Value) {
    let k = key_of(obj, name);
    match (obj.get_mut(&k), value) {
        (Some(Value::Array(have)), Value::Array(new)) => append_new(have, new),
        (Some(Value::Array(have)), v) => {
            if !have.iter().any(|h| same_member(h, &v)) {
                have.push(v);
            }
        }
        (Some(Value::Object(have)), Value::Object(new)) => {
            for (sk, sv) in new {
                let sk = key_of(have, &sk);
                have.insert(sk, sv);
            }
        }
        (_, v) => {
            obj.insert(k, v);
        }
    }
}

fn is_extension_key(k: &str) -> bool {
    // `get`, not `[..4]`: byte 4 may fall inside a multi-byte character.
    k.len() > 4 && k.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
}

fn guard_mutable(name: &str, readonly: &[&str]) -> Result<(), ScimError> {
    if name.eq_ignore_ascii_case("id")
        || name.eq_ignore_ascii_case("meta")
        || readonly.iter().any(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(ScimError::bad(
            ScimType::Mutability,
            format!("\"{name}\" is read-only"),
        ));
    }
    Ok(())
}

/// Applies one operation. `readonly` names further read-only attributes (a user's `groups`).
pub fn apply(
    resource: &mut Value,
    operation: &PatchOperation,
    readonly: &[&str],
) -> Result<(), ScimError> {
    let op = match operation.op.to_ascii_lowercase().as_str() {
        "add" => Op::Add,
        "replace" => Op::Replace,
        "remove" => Op::Remove,
        other => {
            return Err(ScimError::bad(
                ScimType::InvalidSyntax,
                format!("unknown PATCH op \"{other}\""),
            ));
        }
    };
    let path = match operation.path.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => Some(parse_path(p)?),
    };
    let value = operation.value.clone();
    match (op, path) {
        (Op::Remove, None) => Err(ScimError::bad(ScimType::NoTarget, "remove needs a path")),
        (Op::Add | Op::Replace, None) => {
            let Some(Value::Object(map)) = value else {
                return Err(ScimError::bad(
                    ScimType::InvalidValue,
                    "without a path, value must be an object of attributes",
                ));
            };
            let obj = as_object(resource)?;
            for (k, v) in map {
                if is_extension_key(&k) && v.is_object() {
                    // Attributes of an extension schema, or a core-schema URN wrapping core ones.
                    let target_is_core = k.eq_ignore_ascii_case(super::wire::USER_SCHEMA)
                        || k.eq_ignore_ascii_case(super::wire::GROUP_SCHEMA);
                    let Value::Object(inner) = v else { continue };
                    let ext_key = key_of(obj, &k);
                    for (ik, iv) in inner {
                        guard_mutable(&ik, readonly)?;
                        let target = if target_is_core {
                            &mut *obj
                        } else {
                            let e = obj
                                .entry(ext_key.clone())
                                .or_insert_with(|| Value::Object(Map::new()));
                            as_object(e)?
                        };
                        if op == Op::Add {
                            add_value(target, &ik, iv);
                        } else {
                            let kk = key_of(target, &ik);
                            target.insert(kk, iv);
                        }
                    }
                    continue;
                }
                guard_mutable(&k, readonly)?;
                if op == Op::Add {
                    add_value(obj, &k, v);
                } else {
                    let kk = key_of(obj, &k);
                    obj.insert(kk, v);
                }
            }
            Ok(())
        }
        (op, Some(p)) => {
            guard_mutable(&p.attr.name, readonly)?;
            if op != Op::Remove && value.is_none() {
                return Err(ScimError::bad(
                    ScimType::InvalidValue,
                    "the operation needs a value",
                ));
            }
            let value = value.unwrap_or(Value::Null);
            let Some(obj) = container(resource, &p.attr, op != Op::Remove)? else {
                return Ok(());
            };
            let k = key_of(obj, &p.attr.name);
            match (&p.filter, &p.attr.sub) {
                (None, None) => match op {
                    Op::Add => add_value(obj, &k, value),
                    Op::Replace => {
                        obj.insert(k, value);
                    }
                    Op::Remove => remove_values(obj, &k, value),
                },
                (None, Some(sub)) => {
                    let entry = obj.entry(k.clone());
                    let target = match entry {
                        serde_json::map::Entry::Occupied(o) => o.into_mut(),
                        serde_json::map::Entry::Vacant(v) if op != Op::Remove => {
                            v.insert(Value::Object(Map::new()))
                        }
                        serde_json::map::Entry::Vacant(_) => return Ok(()),
                    };
                    let targets: Vec<&mut Value> = match target {
                        Value::Array(items) => items.iter_mut().collect(),
                        v => vec![v],
                    };
                    for t in targets {
                        let t = as_object(t)?;
                        let sk = key_of(t, sub);
                        if op == Op::Remove {
                            t.remove(&sk);
                        } else {
                            t.insert(sk, value.clone());
                        }
                    }
                }
                (Some(_), Some(_)) => {
                    return Err(bad_path(
                        "a filter path must not use a dotted attribute before \"[\"",
                    ));
                }
                (Some(f), None) => {
                    let Some(Value::Array(items)) = obj.get_mut(&k) else {
                        return match op {
                            Op::Replace => Err(ScimError::bad(
                                ScimType::NoTarget,
                                "no value matches the filter",
                            )),
                            Op::Remove => Ok(()),
                            Op::Add => Err(ScimError::bad(
                                ScimType::NoTarget,
                                "no value matches the filter",
                            )),
                        };
                    };
                    let matched: Vec<usize> = items
                        .iter()
                        .enumerate()
                        .filter(|(_, it)| filter::matches(f, it))
                        .map(|(i, _)| i)
                        .collect();
                    if matched.is_empty() && op == Op::Replace {
                        return Err(ScimError::bad(
                            ScimType::NoTarget,
                            "no value matches the filter",
                        ));
                    }
                    match (&p.sub_after, op) {
                        (None, Op::Remove) => {
                            // `matched` is in ascending order.
                            let mut i = 0;
                            items.retain(|_| {
                                let keep = matched.binary_search(&i).is_err();
                                i += 1;
                                keep
                            });
                            if items.is_empty() {
                                obj.remove(&k);
                            }
                        }
                        (None, _) => {
                            for i in matched {
                                if let (Some(Value::Object(item)), Value::Object(new)) =
                                    (items.get_mut(i), &value)
                                {
                                    if op == Op::Replace {
                                        item.clear();
                                    }
                                    for (sk, sv) in new {
                                        item.insert(sk.clone(), sv.clone());
                                    }
                                } else if let Some(item) = items.get_mut(i) {
                                    *item = value.clone();
                                }
                            }
                        }
                        (Some(sub), op) => {
                            for i in matched {
                                if let Some(Value::Object(item)) = items.get_mut(i) {
                                    let sk = key_of(item, sub);
                                    if op == Op::Remove {
                                        item.remove(&sk);
                                    } else {
                                        item.insert(sk, value.clone());
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn group() -> Value {
        json!({"displayName": "g", "members": [{"value": "u1"}, {"value": "u2"}, {"value": "u3"}]})
    }

    fn remove(path: &str, value: Option<Value>) -> PatchOperation {
        PatchOperation {
            op: "remove".into(),
            path: Some(path.into()),
            value,
        }
    }

    fn members(g: &Value) -> Vec<&str> {
        g.get("members")
            .and_then(Value::as_array)
            .map(|m| m.iter().filter_map(|x| x["value"].as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn remove_members_with_one_value_object_removes_only_that_member() {
        let mut g = group();
        apply(
            &mut g,
            &remove("members", Some(json!({"value": "u2"}))),
            &[],
        )
        .unwrap();
        assert_eq!(members(&g), ["u1", "u3"]);
    }

    #[test]
    fn remove_members_with_a_value_list_removes_only_those_members() {
        let mut g = group();
        let gone = json!([{"value": "u1"}, {"value": "u3"}, {"value": "not-a-member"}]);
        apply(&mut g, &remove("members", Some(gone)), &[]).unwrap();
        assert_eq!(members(&g), ["u2"]);
    }

    #[test]
    fn remove_members_with_a_filter_removes_only_the_matching_member() {
        let mut g = group();
        apply(&mut g, &remove(r#"members[value eq "u3"]"#, None), &[]).unwrap();
        assert_eq!(members(&g), ["u1", "u2"]);
    }

    #[test]
    fn remove_members_naming_nobody_present_changes_nothing() {
        let mut g = group();
        apply(
            &mut g,
            &remove("members", Some(json!({"value": "u9"}))),
            &[],
        )
        .unwrap();
        apply(&mut g, &remove("members", Some(json!([]))), &[]).unwrap();
        assert_eq!(members(&g), ["u1", "u2", "u3"]);
    }

    #[test]
    fn removing_the_last_named_member_drops_the_attribute() {
        let mut g = json!({"displayName": "g", "members": [{"value": "u1"}]});
        apply(
            &mut g,
            &remove("members", Some(json!({"value": "u1"}))),
            &[],
        )
        .unwrap();
        assert_eq!(g, json!({"displayName": "g"}));
    }

    #[test]
    fn remove_without_value_or_filter_clears_the_attribute() {
        for value in [None, Some(Value::Null)] {
            let mut g = group();
            apply(&mut g, &remove("members", value), &[]).unwrap();
            assert_eq!(g, json!({"displayName": "g"}));
        }
    }

    fn add(path: &str, value: Value) -> PatchOperation {
        PatchOperation {
            op: "add".into(),
            path: Some(path.into()),
            value: Some(value),
        }
    }

    /// Issue 15: adding and removing members is looked up, not compared against every member;
    /// what counts as "already there" is unchanged: the same `value` (key in any letter case),
    /// or, for a value without one, the same whole value.
    #[test]
    fn add_members_skips_those_already_present_and_keeps_order() {
        let mut g = group();
        let new = json!([
            {"value": "u2", "display": "again"},
            {"value": "u4"},
            {"VALUE": "u4"},
            {"display": "no value"},
            {"display": "no value"},
            {"value": 7},
            {"value": 7},
        ]);
        apply(&mut g, &add("members", new), &[]).unwrap();
        assert_eq!(
            g["members"],
            json!([{"value": "u1"}, {"value": "u2"}, {"value": "u3"}, {"value": "u4"},
                   {"display": "no value"}, {"value": 7}])
        );
    }

    #[test]
    fn add_and_remove_thousands_of_members_of_a_large_group() {
        let many = |r: std::ops::Range<usize>| -> Value {
            r.map(|i| json!({"value": format!("u{i}")})).collect()
        };
        let mut g = json!({"displayName": "big", "members": many(0..20_000)});
        apply(&mut g, &add("members", many(10_000..30_000)), &[]).unwrap();
        assert_eq!(g["members"], many(0..30_000));
        apply(&mut g, &remove("members", Some(many(5_000..25_000))), &[]).unwrap();
        let left: Vec<Value> = (0..5_000)
            .chain(25_000..30_000)
            .map(|i| json!({"value": format!("u{i}")}))
            .collect();
        assert_eq!(g["members"], Value::Array(left));
    }

    #[test]
    fn remove_members_without_a_string_value_compares_whole_values() {
        let mut g = json!({"displayName": "g", "members": [{"value": "u1"}, {"display": "x"}, {"value": 7}]});
        apply(
            &mut g,
            &remove(
                "members",
                Some(json!([{"display": "x"}, {"value": 7}, {"value": "U1"}])),
            ),
            &[],
        )
        .unwrap();
        // Values compare exactly: "U1" is not "u1".
        assert_eq!(members(&g), ["u1"]);
        assert_eq!(g["members"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn remove_of_a_single_valued_attribute_with_another_value_keeps_it() {
        let mut u = json!({"userName": "a", "title": "Buyer"});
        apply(&mut u, &remove("title", Some(json!("Clerk"))), &[]).unwrap();
        assert_eq!(u["title"], "Buyer");
        apply(&mut u, &remove("title", Some(json!("Buyer"))), &[]).unwrap();
        assert!(u.get("title").is_none());
    }
}
