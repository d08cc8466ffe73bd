use serde_json::json;

use super::*;

fn user() -> Value {
    json!({
        "userName": "Alice@Example.com",
        "externalId": "GUID-1",
        "active": true,
        "displayName": "Alice Smith",
        "name": { "givenName": "Alice", "familyName": "Smith" },
        "emails": [
            { "value": "alice@example.com", "type": "work", "primary": true },
            { "value": "alice@home.example", "type": "home" }
        ],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": { "department": "Merch" },
        "meta": { "created": "2026-03-01T10:00:00Z", "lastModified": "2026-03-02T10:00:00Z", "version": "W/\"a\"" }
    })
}

fn m(f: &str) -> bool {
    matches(&parse(f).unwrap_or_else(|e| panic!("{f}: {e}")), &user())
}

#[test]
fn eq_on_user_name_ignores_case() {
    assert!(m(r#"userName eq "alice@example.com""#));
    assert!(m(r#"USERNAME EQ "ALICE@EXAMPLE.COM""#));
    assert!(!m(r#"userName eq "bob@example.com""#));
}

#[test]
fn external_id_is_case_exact() {
    assert!(m(r#"externalId eq "GUID-1""#));
    assert!(!m(r#"externalId eq "guid-1""#));
}

#[test]
fn ne_co_sw_ew_pr() {
    assert!(m(r#"userName ne "bob""#));
    assert!(m(r#"displayName co "ice sm""#));
    assert!(m(r#"displayName sw "ALI""#));
    assert!(m(r#"displayName ew "smith""#));
    assert!(!m("title pr"));
    assert!(m("emails pr"));
    assert!(m("name.givenName pr"));
}

#[test]
fn multi_valued_emails_match_any_value() {
    assert!(m(r#"emails.value eq "alice@home.example""#));
    assert!(m(r#"emails eq "alice@example.com""#));
    assert!(m(r#"emails co "home""#));
}

#[test]
fn value_path_filters_elements() {
    assert!(m(r#"emails[type eq "work" and value co "example.com"]"#));
    assert!(!m(r#"emails[type eq "work" and value co "home"]"#));
}

#[test]
fn booleans_and_logic_and_parentheses() {
    assert!(m("active eq true"));
    assert!(!m("active eq false"));
    assert!(m(
        r#"active eq true and (userName sw "bob" or displayName sw "alice")"#
    ));
    assert!(!m(r#"not (active eq true)"#));
    assert!(m(
        r#"userName sw "x" or userName sw "a" and active eq true"#
    ));
    // "and" binds tighter than "or".
    assert!(!m(
        r#"(userName sw "x" or userName sw "a") and active eq false"#
    ));
}

#[test]
fn dates_compare_as_instants() {
    assert!(m(r#"meta.lastModified gt "2026-03-01T23:59:59Z""#));
    assert!(m(r#"meta.lastModified ge "2026-03-02T10:00:00Z""#));
    assert!(!m(r#"meta.lastModified lt "2026-03-02T10:00:00Z""#));
    assert!(m(r#"meta.created le "2026-03-01T11:00:00+01:00""#));
    assert!(m(r#"meta.created lt "2026-03-01T10:00:01.5Z""#));
}

#[test]
fn extension_attributes_by_urn() {
    assert!(m(
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "merch""#
    ));
    assert!(m(
        r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "alice""#
    ));
}

#[test]
fn members_value_filter_on_groups() {
    let g = json!({ "displayName": "bc-merch", "members": [{ "value": "u1" }, { "value": "u2" }] });
    let f = parse(r#"members[value eq "u2"]"#).unwrap();
    assert!(matches(&f, &g));
    let f = parse(r#"members.value eq "u3""#).unwrap();
    assert!(!matches(&f, &g));
}

#[test]
fn escaped_quotes_in_strings() {
    let u = json!({ "displayName": "a \"quoted\" name" });
    assert!(matches(
        &parse(r#"displayName co "\"quoted\"""#).unwrap(),
        &u
    ));
}

#[test]
fn malformed_filters_are_errors_not_panics() {
    for bad in [
        "",
        "userName",
        "userName eq",
        r#"userName xx "a""#,
        r#"userName eq "a" and"#,
        r#"(userName eq "a""#,
        r#"userName eq "a"))"#,
        r#"emails[type eq "work""#,
        r#"userName eq "unterminated"#,
        r#"not userName eq "a""#,
        "user$%Name eq 1",
        r#"userName eq bareword"#,
    ] {
        assert!(parse(bad).is_err(), "{bad:?} should not parse");
    }
    let deep = format!("{}userName pr{}", "(".repeat(100), ")".repeat(100));
    assert!(parse(&deep).is_err());
}

#[test]
fn a_multibyte_character_across_byte_four_is_an_error_not_a_panic() {
    // Found by the scim_filter fuzz target (tests/fuzz/corpus/scim_filter/crash-urn-slice.txt):
    // the "urn:" prefix check sliced the name at byte 4, inside a multi-byte character.
    for bad in [
        "ty\u{fffd}work eq \"x\"",
        "abc\u{e9}x pr",
        "emails[ty\u{fffd}work eq \"x\"]",
    ] {
        let e = parse(bad).expect_err(bad);
        assert!(e.message.contains("is not an attribute path"), "{e}");
    }
    assert!(parse_attr_path("abc\u{e9}x").is_err());
}
