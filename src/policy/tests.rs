//! The entitlement engine, one behaviour per test, then properties over generated policies.
//!
//! Time is a parameter, so every validity boundary is checked at t-1, t and t+1 without sleeping.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::identity::IdpId;

/// An arbitrary fixed "now" (2027-01-15T08:00:00Z).
const NOW: UnixTime = 1_800_000_000;

fn sid(s: &str) -> StoreId {
    StoreId::new(s)
}

/// A merchandiser signing in through Access Manager.
fn ann() -> Identity {
    Identity {
        subject: "ann-0001".into(),
        idp: IdpId::new("am"),
        email: Some("Ann@Example.COM".into()),
        email_verified: true,
        given_name: Some("Ann".into()),
        family_name: Some("Lee".into()),
        name: None,
        groups: vec!["BC-Merch".into(), "cn=Staff,ou=groups,o=corp".into()],
        roles: vec![],
        attributes: BTreeMap::from([
            ("department".into(), vec!["sales".into()]),
            ("country".into(), vec!["NL".into(), "BE".into()]),
        ]),
        auth: Default::default(),
        signed_in_at: NOW,
    }
}

fn selector(stores: &[&str]) -> StoreSelector {
    if stores == ["*"] {
        StoreSelector::All
    } else {
        StoreSelector::Only(stores.iter().map(|s| sid(s)).collect())
    }
}

fn allow(name: &str, stores: &[&str]) -> Rule {
    Rule::allow(name, format!("role-of-{name}"), selector(stores))
}

fn deny(name: &str, stores: &[&str]) -> Rule {
    Rule::deny(name, selector(stores))
}

fn group_of(g: CustomerGroupRef) -> GrantSpec {
    GrantSpec {
        customer_group: Some(g),
        ..Default::default()
    }
}

fn with(rule: Rule, conditions: Conditions) -> Rule {
    Rule { conditions, ..rule }
}

fn policy(stores: &[&str], rules: Vec<Rule>) -> Policy {
    Policy::with_plain_stores(stores.iter().map(|s| sid(s)).collect(), rules)
}

/// The rule (or default label) that decided, for compact assertions.
fn decided_by(d: &Decision) -> String {
    match d {
        Decision::Allow { grant, .. } => format!("allow:{}", grant.rule),
        Decision::Deny { reason } => format!("deny:{}", reason.rule_label()),
    }
}

fn decide_one(rules: Vec<Rule>, id: &Identity) -> String {
    decided_by(&policy(&["retail"], rules).decide(id, &sid("retail"), NOW))
}

/// Runs a table of `(case, conditions, expected match)` through a one-rule allow policy.
fn check_conditions(cases: &[(&str, Conditions, bool)], id: &Identity) {
    for (case, conditions, expected) in cases {
        let got = decide_one(vec![with(allow("r", &["retail"]), conditions.clone())], id);
        let want = if *expected {
            "allow:r"
        } else {
            "deny:default-deny"
        };
        assert_eq!(got, want, "case: {case}");
    }
}

fn groups(g: &[&str]) -> Conditions {
    Conditions {
        groups_any: g.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn domains(d: &[&str]) -> Conditions {
    Conditions {
        email_domains: d.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn idps(i: &[&str]) -> Conditions {
    Conditions {
        idps: i.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn attrs(a: &[(&str, &[&str])]) -> Conditions {
    Conditions {
        attributes: a
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Conditions
// ---------------------------------------------------------------------------------------------

#[test]
fn a_rule_without_conditions_matches_everyone() {
    check_conditions(&[("no conditions", Conditions::default(), true)], &ann());
}

#[test]
fn groups_any_matches_any_listed_group_case_insensitively() {
    check_conditions(
        &[
            ("exact name", groups(&["BC-Merch"]), true),
            ("other case", groups(&["bc-merch"]), true),
            ("one of several", groups(&["bc-admin", "bc-merch"]), true),
            (
                "DN compared whole, any case",
                groups(&["CN=staff,OU=Groups,O=Corp"]),
                true,
            ),
            ("DN's first value is not the DN", groups(&["staff"]), false),
            ("prefix is not a match", groups(&["bc"]), false),
            ("no listed group", groups(&["bc-admin"]), false),
        ],
        &ann(),
    );
    let nobody = Identity {
        groups: vec![],
        ..ann()
    };
    check_conditions(
        &[("user without groups", groups(&["bc-merch"]), false)],
        &nobody,
    );
}

/// Issue 10: an address the IdP does not vouch for matches no allow rule's `email_domains`, and
/// the refusal names the rule that would have granted the store; a deny rule still takes it.
#[test]
fn email_domains_need_an_address_the_idp_vouches_for_to_allow() {
    let unverified = Identity {
        email_verified: false,
        ..ann()
    };
    let by_domain = with(
        allow("staff-by-domain", &["retail"]),
        domains(&["example.com"]),
    );
    let p = policy(&["retail"], vec![by_domain.clone()]);
    assert_eq!(
        p.decide(&unverified, &sid("retail"), NOW),
        Decision::Deny {
            reason: DenyReason::EmailNotVerified {
                rule: "staff-by-domain".into()
            }
        }
    );
    assert_eq!(
        decide_one(vec![by_domain.clone()], &ann()),
        "allow:staff-by-domain"
    );
    let refusal = p
        .authorize_launch(&unverified, &sid("retail"), NOW, &LocalPath::root())
        .unwrap_err();
    assert_eq!(refusal.code(), "email_not_verified");
    assert_eq!(refusal.rule_label(), "staff-by-domain");
    assert!(
        refusal
            .explain()
            .contains("did not confirm your email address")
    );
    // Another allow rule that applies without the email still grants.
    let by_group = with(allow("merch", &["retail"]), groups(&["bc-merch"]));
    assert_eq!(
        decide_one(vec![by_domain.clone(), by_group], &unverified),
        "allow:merch"
    );
    // A deny rule on the domain holds whether or not the address is verified.
    let deny_domain = with(deny("no-example", &["retail"]), domains(&["example.com"]));
    let open = allow("everyone", &["retail"]);
    for id in [&ann(), &unverified] {
        assert_eq!(
            decide_one(vec![deny_domain.clone(), open.clone()], id),
            "deny:no-example"
        );
    }
    // A rule whose window has ended is not reported as an email problem.
    let ended = Rule {
        not_after: Some(NOW - 1),
        ..by_domain
    };
    assert_eq!(decide_one(vec![ended], &unverified), "deny:default-deny");
}

#[test]
fn email_domains_match_the_domain_after_the_last_at_case_insensitively() {
    check_conditions(
        &[
            ("lower-case rule", domains(&["example.com"]), true),
            ("mixed-case rule", domains(&["EXAMPLE.com"]), true),
            (
                "one of several",
                domains(&["example.org", "example.com"]),
                true,
            ),
            ("parent domain is not a match", domains(&["com"]), false),
            (
                "subdomain is not a match",
                domains(&["mail.example.com"]),
                false,
            ),
        ],
        &ann(),
    );
    let no_email = Identity {
        email: None,
        ..ann()
    };
    check_conditions(&[("no email", domains(&["example.com"]), false)], &no_email);
    let no_at = Identity {
        email: Some("example.com".into()),
        ..ann()
    };
    check_conditions(
        &[("email without @", domains(&["example.com"]), false)],
        &no_at,
    );
    let tricky = Identity {
        email: Some("\"a@evil.com\"@example.com".into()),
        ..ann()
    };
    check_conditions(
        &[
            (
                "quoted local part: real domain",
                domains(&["example.com"]),
                true,
            ),
            (
                "quoted local part: not the fake one",
                domains(&["evil.com"]),
                false,
            ),
        ],
        &tricky,
    );
}

#[test]
fn idps_match_only_the_listed_identity_providers() {
    check_conditions(
        &[
            ("listed", idps(&["am"]), true),
            ("one of several", idps(&["partners", "am"]), true),
            ("ids are exact", idps(&["AM"]), false),
            ("not listed", idps(&["partners"]), false),
        ],
        &ann(),
    );
}

#[test]
fn attributes_require_every_listed_attribute_to_carry_a_listed_value() {
    check_conditions(
        &[
            (
                "one attribute, its value",
                attrs(&[("department", &["sales"])]),
                true,
            ),
            (
                "one of the wanted values",
                attrs(&[("department", &["it", "sales"])]),
                true,
            ),
            (
                "one of the user's values",
                attrs(&[("country", &["BE"])]),
                true,
            ),
            (
                "two attributes, both match",
                attrs(&[("department", &["sales"]), ("country", &["NL"])]),
                true,
            ),
            (
                "two attributes, one fails",
                attrs(&[("department", &["sales"]), ("country", &["DE"])]),
                false,
            ),
            (
                "values are exact",
                attrs(&[("department", &["Sales"])]),
                false,
            ),
            (
                "attribute missing",
                attrs(&[("cost_center", &["42"])]),
                false,
            ),
            (
                "no wanted value can never match",
                attrs(&[("department", &[])]),
                false,
            ),
        ],
        &ann(),
    );
}

#[test]
fn all_condition_kinds_must_match_together() {
    let all = || Conditions {
        groups_any: vec!["bc-merch".into()],
        email_domains: vec!["example.com".into()],
        idps: vec!["am".into()],
        attributes: BTreeMap::from([("department".into(), vec!["sales".into()])]),
        ..Default::default()
    };
    check_conditions(
        &[
            ("every kind matches", all(), true),
            (
                "group fails",
                Conditions {
                    groups_any: vec!["bc-admin".into()],
                    ..all()
                },
                false,
            ),
            (
                "domain fails",
                Conditions {
                    email_domains: vec!["example.org".into()],
                    ..all()
                },
                false,
            ),
            (
                "idp fails",
                Conditions {
                    idps: vec!["partners".into()],
                    ..all()
                },
                false,
            ),
            (
                "attribute fails",
                Conditions {
                    attributes: BTreeMap::from([("department".into(), vec!["it".into()])]),
                    ..all()
                },
                false,
            ),
        ],
        &ann(),
    );
}

// ---------------------------------------------------------------------------------------------
// Precedence
// ---------------------------------------------------------------------------------------------

#[test]
fn deny_wins_over_allow_whether_it_comes_before_or_after() {
    let orders = [
        (
            "deny first",
            vec![deny("no", &["retail"]), allow("yes", &["retail"])],
        ),
        (
            "deny last",
            vec![allow("yes", &["retail"]), deny("no", &["retail"])],
        ),
        (
            "deny between",
            vec![
                allow("yes", &["retail"]),
                deny("no", &["*"]),
                allow("also", &["retail"]),
            ],
        ),
    ];
    for (case, rules) in orders {
        assert_eq!(decide_one(rules, &ann()), "deny:no", "case: {case}");
    }
}

#[test]
fn deny_that_does_not_apply_leaves_the_allow_standing() {
    let cases = [
        ("other store", deny("no", &["wholesale"])),
        (
            "conditions do not match",
            with(deny("no", &["retail"]), groups(&["contractors"])),
        ),
        (
            "not yet valid",
            Rule {
                not_before: Some(NOW + 1),
                ..deny("no", &["retail"])
            },
        ),
        (
            "expired",
            Rule {
                not_after: Some(NOW),
                ..deny("no", &["retail"])
            },
        ),
    ];
    for (case, d) in cases {
        let p = policy(&["retail", "wholesale"], vec![d, allow("yes", &["retail"])]);
        assert_eq!(
            decided_by(&p.decide(&ann(), &sid("retail"), NOW)),
            "allow:yes",
            "case: {case}"
        );
    }
}

#[test]
fn first_allow_in_file_order_decides_role_and_customer_group_and_later_ones_are_overridden() {
    let first = Rule {
        role: "merchandiser".into(),
        grant: group_of(CustomerGroupRef::Name("Staff".into())),
        ..allow("first", &["retail"])
    };
    let second = Rule {
        role: "buyer".into(),
        grant: group_of(CustomerGroupRef::Id(7)),
        ..allow("second", &["*"])
    };
    let not_matching = with(allow("not-matching", &["retail"]), groups(&["bc-admin"]));
    let third = allow("third", &["retail"]);
    let p = policy(&["retail"], vec![first, not_matching, second, third]);
    assert_eq!(
        p.decide(&ann(), &sid("retail"), NOW),
        Decision::Allow {
            grant: Grant {
                store: sid("retail"),
                role: "merchandiser".into(),
                customer_group: Some(CustomerGroupRef::Name("Staff".into())),
                rule: "first".into(),
                template: None,
                expires_at: None,
                b2b: None,
                allowed_paths: None,
                require_acr: None,
                max_session_age: None,
                control_panel: None,
            },
            overridden: vec!["second".into(), "third".into()],
        }
    );
}

#[test]
fn a_single_allow_overrides_nothing() {
    let p = policy(&["retail"], vec![allow("only", &["retail"])]);
    match p.decide(&ann(), &sid("retail"), NOW) {
        Decision::Allow { overridden, .. } => assert!(overridden.is_empty()),
        d => panic!("expected allow, got {d:?}"),
    }
}

#[test]
fn no_applicable_rule_denies_by_default() {
    let cases = [
        ("no rules at all", vec![]),
        ("rule for another store", vec![allow("w", &["wholesale"])]),
        (
            "rule whose conditions fail",
            vec![with(allow("a", &["retail"]), idps(&["partners"]))],
        ),
        (
            "rule not yet valid",
            vec![Rule {
                not_before: Some(NOW + 1),
                ..allow("a", &["retail"])
            }],
        ),
    ];
    for (case, rules) in cases {
        let p = policy(&["retail", "wholesale"], rules);
        assert_eq!(
            p.decide(&ann(), &sid("retail"), NOW),
            Decision::Deny {
                reason: DenyReason::NoMatchingRule
            },
            "case: {case}"
        );
    }
}

#[test]
fn a_store_that_is_not_configured_is_denied_even_under_a_wildcard_allow() {
    let p = policy(
        &["retail"],
        vec![allow("all", &["*"]), allow("ghost", &["ghost"])],
    );
    assert_eq!(
        p.decide(&ann(), &sid("ghost"), NOW),
        Decision::Deny {
            reason: DenyReason::UnknownStore
        }
    );
}

#[test]
fn wildcard_selector_covers_every_store_and_a_list_only_its_own() {
    let p = policy(
        &["retail", "wholesale", "outlet"],
        vec![allow("all", &["*"]), allow("listed", &["retail", "outlet"])],
    );
    let table = [("retail", true), ("wholesale", false), ("outlet", true)];
    for (store, in_list) in table {
        let Decision::Allow { grant, overridden } = p.decide(&ann(), &sid(store), NOW) else {
            panic!("{store}: `*` should allow");
        };
        assert_eq!(grant.rule, "all", "{store}");
        let want: Vec<String> = if in_list {
            vec!["listed".into()]
        } else {
            vec![]
        };
        assert_eq!(overridden, want, "{store}");
    }
    let listed_only = policy(&["retail", "wholesale"], vec![allow("listed", &["retail"])]);
    assert_eq!(
        decided_by(&listed_only.decide(&ann(), &sid("retail"), NOW)),
        "allow:listed"
    );
    assert_eq!(
        decided_by(&listed_only.decide(&ann(), &sid("wholesale"), NOW)),
        "deny:default-deny"
    );
}

// ---------------------------------------------------------------------------------------------
// Validity windows
// ---------------------------------------------------------------------------------------------

const T: UnixTime = NOW;

#[test]
fn not_before_is_inclusive() {
    let p = policy(
        &["retail"],
        vec![Rule {
            not_before: Some(T),
            ..allow("r", &["retail"])
        }],
    );
    for (now, expected) in [(T - 1, false), (T, true), (T + 1, true)] {
        let allowed = matches!(
            p.decide(&ann(), &sid("retail"), now),
            Decision::Allow { .. }
        );
        assert_eq!(allowed, expected, "at t{:+}", now - T);
    }
}

#[test]
fn not_after_is_exclusive() {
    let p = policy(
        &["retail"],
        vec![Rule {
            not_after: Some(T),
            ..allow("r", &["retail"])
        }],
    );
    for (now, expected) in [(T - 1, true), (T, false), (T + 1, false)] {
        let allowed = matches!(
            p.decide(&ann(), &sid("retail"), now),
            Decision::Allow { .. }
        );
        assert_eq!(allowed, expected, "at t{:+}", now - T);
    }
}

#[test]
fn deny_windows_have_the_same_edges() {
    let rules = |d: Rule| vec![d, allow("yes", &["retail"])];
    let from = policy(
        &["retail"],
        rules(Rule {
            not_before: Some(T),
            ..deny("no", &["retail"])
        }),
    );
    let until = policy(
        &["retail"],
        rules(Rule {
            not_after: Some(T),
            ..deny("no", &["retail"])
        }),
    );
    for (now, from_t, until_t) in [
        (T - 1, "allow:yes", "deny:no"),
        (T, "deny:no", "allow:yes"),
        (T + 1, "deny:no", "allow:yes"),
    ] {
        assert_eq!(
            decided_by(&from.decide(&ann(), &sid("retail"), now)),
            from_t,
            "t{:+}",
            now - T
        );
        assert_eq!(
            decided_by(&until.decide(&ann(), &sid("retail"), now)),
            until_t,
            "t{:+}",
            now - T
        );
    }
}

#[test]
fn a_rule_outside_its_window_neither_decides_nor_is_recorded_as_overridden() {
    let p = policy(
        &["retail"],
        vec![
            Rule {
                not_after: Some(T),
                ..allow("expired", &["retail"])
            },
            allow("current", &["retail"]),
            Rule {
                not_before: Some(T + 1),
                ..allow("future", &["retail"])
            },
        ],
    );
    let Decision::Allow { grant, overridden } = p.decide(&ann(), &sid("retail"), T) else {
        panic!("expected allow");
    };
    assert_eq!(grant.rule, "current");
    assert!(overridden.is_empty(), "{overridden:?}");
}

#[test]
fn grant_expires_at_the_deciding_rules_not_after() {
    let p = policy(
        &["retail", "wholesale"],
        vec![
            Rule {
                not_before: Some(T - 100),
                not_after: Some(T + 3600),
                ..allow("sale", &["retail"])
            },
            allow("always", &["*"]),
        ],
    );
    let grants = p.grants(&ann(), T);
    assert_eq!(grants[0].rule, "sale");
    assert_eq!(grants[0].expires_at, Some(T + 3600));
    assert_eq!(grants[1].rule, "always");
    assert_eq!(grants[1].expires_at, None);
}

#[test]
fn grants_where_decides_the_selected_stores_only_and_as_grants_does() {
    let p = policy(
        &["retail", "wholesale", "outlet"],
        vec![deny("no-wholesale", &["wholesale"]), allow("r", &["*"])],
    );
    assert_eq!(p.grants_where(&ann(), NOW, |_| true), p.grants(&ann(), NOW));
    let some = p.grants_where(&ann(), NOW, |s| s != &sid("retail"));
    let stores: Vec<_> = some.iter().map(|g| g.store.clone()).collect();
    assert_eq!(stores, vec![sid("outlet")]);
    assert!(p.grants_where(&ann(), NOW, |_| false).is_empty());
    assert_eq!(
        p.granted_stores_where(&ann(), NOW, |s| s != &sid("retail")),
        [&sid("outlet")]
    );
    assert_eq!(
        p.granted_stores_where(&ann(), NOW, |_| true),
        [&sid("retail"), &sid("outlet")]
    );
}

// ---------------------------------------------------------------------------------------------
// Launch and portal
// ---------------------------------------------------------------------------------------------

#[test]
fn authorize_launch_allows_with_the_grant_subject_and_time() {
    let p = policy(&["retail"], vec![allow("r", &["retail"])]);
    let launch = p
        .authorize_launch(&ann(), &sid("retail"), NOW, &LocalPath::root())
        .unwrap();
    assert_eq!(launch.grant().rule, "r");
    assert_eq!(launch.grant().store, sid("retail"));
    assert_eq!(launch.grant().role, "role-of-r");
    assert_eq!(launch.subject(), "ann-0001");
    assert_eq!(launch.decided_at(), NOW);
}

#[test]
fn authorize_launch_refuses_with_the_reason() {
    let p = policy(
        &["retail", "wholesale"],
        vec![deny("no-wholesale", &["wholesale"]), allow("r", &["*"])],
    );
    let cases = [
        (
            "wholesale",
            DenyReason::DeniedByRule {
                rule: "no-wholesale".into(),
            },
        ),
        ("ghost", DenyReason::UnknownStore),
    ];
    for (store, reason) in cases {
        assert_eq!(
            p.authorize_launch(&ann(), &sid(store), NOW, &LocalPath::root())
                .unwrap_err(),
            LaunchRefusal::Denied(reason),
            "{store}"
        );
    }
    let empty = policy(&["retail"], vec![]);
    assert_eq!(
        empty
            .authorize_launch(&ann(), &sid("retail"), NOW, &LocalPath::root())
            .unwrap_err(),
        LaunchRefusal::Denied(DenyReason::NoMatchingRule)
    );
}

#[test]
fn grants_keep_portal_order_and_skip_denied_stores() {
    let p = policy(
        &["outlet", "retail", "wholesale", "b2b"],
        vec![
            allow("b2b", &["b2b"]),
            allow("retail", &["retail"]),
            deny("no-wholesale", &["wholesale"]),
            allow("everything", &["*"]),
        ],
    );
    let stores: Vec<String> = p
        .grants(&ann(), NOW)
        .into_iter()
        .map(|g| format!("{}<-{}", g.store, g.rule))
        .collect();
    assert_eq!(stores, ["outlet<-everything", "retail<-retail", "b2b<-b2b"]);
    let evaluated: Vec<String> = p
        .evaluate(&ann(), NOW)
        .into_iter()
        .map(|(s, _)| s.to_string())
        .collect();
    assert_eq!(evaluated, ["outlet", "retail", "wholesale", "b2b"]);
}

#[test]
fn deny_reasons_name_their_rule_for_audit_and_explain() {
    let by_rule = DenyReason::DeniedByRule {
        rule: "contractors".into(),
    };
    assert_eq!(by_rule.rule_label(), "contractors");
    assert_eq!(
        by_rule.explain(),
        "the rule \"contractors\" denies this store"
    );
    assert_eq!(DenyReason::NoMatchingRule.rule_label(), "default-deny");
    assert_eq!(DenyReason::UnknownStore.rule_label(), "unknown-store");
}

// ---------------------------------------------------------------------------------------------
// More rule kinds: roles, attribute regex, acr/amr, DNs
// ---------------------------------------------------------------------------------------------

fn cond(f: impl FnOnce(&mut Conditions)) -> Conditions {
    let mut c = Conditions::default();
    f(&mut c);
    c
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Ann, signed in with MFA, holding two roles and a job title.
fn ann_mfa() -> Identity {
    let mut id = ann();
    id.roles = strs(&["Buyer", "approver"]);
    id.attributes
        .insert("title".into(), strs(&["Senior Buyer EMEA", "x"]));
    id.auth = crate::identity::AuthContext {
        auth_time: Some(NOW - 60),
        acr: Some("urn:example:contract:mfa".into()),
        amr: strs(&["pwd", "otp"]),
        acr_implies: Vec::new(),
    };
    id
}

#[test]
fn roles_any_matches_any_listed_role_case_insensitively() {
    check_conditions(
        &[
            ("exact", cond(|c| c.roles_any = strs(&["approver"])), true),
            ("other case", cond(|c| c.roles_any = strs(&["BUYER"])), true),
            (
                "none listed held",
                cond(|c| c.roles_any = strs(&["admin"])),
                false,
            ),
        ],
        &ann_mfa(),
    );
    check_conditions(
        &[(
            "no roles at all",
            cond(|c| c.roles_any = strs(&["buyer"])),
            false,
        )],
        &ann(),
    );
}

fn regex_on(attr: &str, pattern: &str) -> Conditions {
    cond(|c| {
        c.attribute_regex
            .insert(attr.into(), AttrRegex::new(pattern).unwrap());
    })
}

#[test]
fn attribute_regex_must_match_a_whole_value() {
    check_conditions(
        &[
            ("whole value", regex_on("title", "Senior Buyer .*"), true),
            ("any of the values", regex_on("title", "x"), true),
            ("anchored at the start", regex_on("title", "Buyer.*"), false),
            ("anchored at the end", regex_on("title", "Senior"), false),
            (
                "alternation stays anchored",
                regex_on("title", "y|Senior"),
                false,
            ),
            (
                "case-insensitive when asked",
                regex_on("title", "(?i)senior buyer emea"),
                true,
            ),
            ("missing attribute", regex_on("nope", ".*"), false),
        ],
        &ann_mfa(),
    );
}

#[test]
fn attributes_equals_is_a_one_value_any_of() {
    check_conditions(
        &[
            ("equals", attrs(&[("department", &["sales"])]), true),
            (
                "equals is exact",
                attrs(&[("department", &["Sales"])]),
                false,
            ),
            ("any of", attrs(&[("country", &["DE", "BE"])]), true),
        ],
        &ann(),
    );
}

#[test]
fn acr_any_and_amr_any_read_the_authentication_context() {
    let mfa = "urn:example:contract:mfa";
    check_conditions(
        &[
            (
                "acr listed",
                cond(|c| c.acr_any = strs(&["pwd", mfa])),
                true,
            ),
            (
                "acr not listed",
                cond(|c| c.acr_any = strs(&["urn:x"])),
                false,
            ),
            (
                "amr one of",
                cond(|c| c.amr_any = strs(&["otp", "hwk"])),
                true,
            ),
            ("amr none", cond(|c| c.amr_any = strs(&["hwk"])), false),
        ],
        &ann_mfa(),
    );
    check_conditions(
        &[
            (
                "no acr in session",
                cond(|c| c.acr_any = strs(&[mfa])),
                false,
            ),
            (
                "no amr in session",
                cond(|c| c.amr_any = strs(&["pwd"])),
                false,
            ),
        ],
        &ann(),
    );
}

#[test]
fn group_dns_compare_rdn_by_rdn_ignoring_case_and_spaces() {
    assert_eq!(
        group_key("CN=Staff, OU=Groups ,o=Corp"),
        "cn=staff,ou=groups,o=corp"
    );
    assert_eq!(group_key(" BC-Merch "), "bc-merch");
    assert_eq!(
        group_key("cn=Sales\\, EMEA,o=corp"),
        "cn=sales\\, emea,o=corp"
    );
    check_conditions(
        &[
            (
                "spaces after commas",
                groups(&["cn=Staff, ou=groups, o=corp"]),
                true,
            ),
            (
                "spaces around =",
                groups(&["cn = staff,ou = groups,o=corp"]),
                true,
            ),
            (
                "other container",
                groups(&["cn=staff,ou=people,o=corp"]),
                false,
            ),
            ("shorter DN", groups(&["cn=staff,ou=groups"]), false),
            ("name never matches a DN", groups(&["staff"]), false),
        ],
        &ann(),
    );
    let escaped = Identity {
        groups: vec!["cn=Sales\\, EMEA,ou=groups,o=corp".into()],
        ..ann()
    };
    check_conditions(
        &[
            (
                "escaped comma kept",
                groups(&["CN=sales\\, emea,ou=groups,o=corp"]),
                true,
            ),
            (
                "escaped comma is not a separator",
                groups(&["cn=sales\\"]),
                false,
            ),
        ],
        &escaped,
    );
}

// ---------------------------------------------------------------------------------------------
// Store tags and templates
// ---------------------------------------------------------------------------------------------

fn store(id: &str, tags: &[&str], template: Option<&str>) -> StoreEntry {
    StoreEntry {
        id: sid(id),
        tags: strs(tags),
        template: template.map(str::to_owned),
    }
}

fn tagged(name: &str, tags: &[&str]) -> Rule {
    Rule {
        store_tags: strs(tags),
        ..Rule::allow(name, "merchandiser", StoreSelector::Only(vec![]))
    }
}

fn granted_stores(p: &Policy, id: &Identity) -> Vec<String> {
    p.grants(id, NOW)
        .into_iter()
        .map(|g| format!("{}<-{}", g.store, g.rule))
        .collect()
}

#[test]
fn store_tags_select_every_store_carrying_one_of_them() {
    let stores = vec![
        store("nl", &["eu", "brand-a"], None),
        store("de", &["EU"], None),
        store("us", &["na", "brand-a"], None),
        store("outlet", &[], None),
    ];
    let cases: [(&str, Vec<Rule>, &[&str]); 4] = [
        (
            "one tag, any case",
            vec![tagged("eu", &["eu"])],
            &["nl<-eu", "de<-eu"],
        ),
        (
            "any of several tags",
            vec![tagged("t", &["brand-a", "na"])],
            &["nl<-t", "us<-t"],
        ),
        (
            "tags and ids are a union",
            vec![Rule {
                stores: StoreSelector::Only(vec![sid("outlet")]),
                ..tagged("u", &["na"])
            }],
            &["us<-u", "outlet<-u"],
        ),
        (
            "a deny by tag wins",
            vec![
                tagged("all", &["eu", "na"]),
                Rule {
                    store_tags: strs(&["brand-a"]),
                    ..Rule::deny("no-brand-a", StoreSelector::Only(vec![]))
                },
            ],
            &["de<-all"],
        ),
    ];
    for (case, rules, want) in cases {
        let p = Policy::new(stores.clone(), vec![], rules);
        assert_eq!(granted_stores(&p, &ann()), want, "case: {case}");
    }
}

fn staff_template() -> Template {
    Template {
        name: "standard".into(),
        roles: BTreeMap::from([
            (
                "merchandiser".into(),
                GrantSpec {
                    customer_group: Some(CustomerGroupRef::Name("Staff".into())),
                    ..Default::default()
                },
            ),
            (
                "agency".into(),
                GrantSpec {
                    customer_group: Some(CustomerGroupRef::Name("Agencies".into())),
                    allowed_paths: Some(strs(&["/b2b/", "/account.php"])),
                    require_acr: Some("urn:example:contract:mfa".into()),
                    max_session_age: Some(3600),
                    b2b: Some(B2bGrant {
                        company_id: 42,
                        role: B2bRole::JuniorBuyer,
                    }),
                    control_panel: None,
                },
            ),
        ]),
    }
}

fn b2b_template() -> Template {
    Template {
        name: "b2b".into(),
        roles: BTreeMap::from([(
            "merchandiser".into(),
            GrantSpec {
                b2b: Some(B2bGrant {
                    company_id: 7,
                    role: B2bRole::Custom(99),
                }),
                ..Default::default()
            },
        )]),
    }
}

#[test]
fn templates_shape_grants_rule_template_first_then_store_template_and_rule_fields_override() {
    let stores = vec![
        store("nl", &[], Some("standard")),
        store("wholesale", &[], Some("b2b")),
        store("plain", &[], None),
    ];
    let templates = vec![staff_template(), b2b_template()];
    let everywhere = || Rule::allow("merch", "merchandiser", StoreSelector::All);
    type Check = fn(&Grant) -> bool;
    let cases: [(&str, Rule, &str, Check); 5] = [
        ("store's template", everywhere(), "nl", |g| {
            g.customer_group == Some(CustomerGroupRef::Name("Staff".into()))
                && g.template.as_deref() == Some("standard")
        }),
        (
            "another store, another template",
            everywhere(),
            "wholesale",
            |g| {
                g.customer_group.is_none()
                    && g.b2b
                        == Some(B2bGrant {
                            company_id: 7,
                            role: B2bRole::Custom(99),
                        })
            },
        ),
        (
            "no template: nothing from one",
            everywhere(),
            "plain",
            |g| g.template.is_none() && g.customer_group.is_none(),
        ),
        (
            "the rule's template beats the store's",
            Rule {
                template: Some("b2b".into()),
                ..everywhere()
            },
            "nl",
            |g| g.template.as_deref() == Some("b2b") && g.customer_group.is_none(),
        ),
        (
            "a field on the rule overrides the template's",
            Rule {
                grant: GrantSpec {
                    customer_group: Some(CustomerGroupRef::Id(5)),
                    ..Default::default()
                },
                ..everywhere()
            },
            "nl",
            |g| g.customer_group == Some(CustomerGroupRef::Id(5)),
        ),
    ];
    for (case, rule, at, check) in cases {
        let p = Policy::new(stores.clone(), templates.clone(), vec![rule]);
        let Decision::Allow { grant, .. } = p.decide(&ann(), &sid(at), NOW) else {
            panic!("case {case}: expected allow");
        };
        assert!(check(&grant), "case {case}: {grant:?}");
    }
    // A role the template does not define gets only the rule's own settings.
    let p = Policy::new(
        stores.clone(),
        templates,
        vec![Rule::allow("odd", "auditor", StoreSelector::All)],
    );
    let g = p.grants(&ann(), NOW);
    assert!(
        g.iter()
            .all(|g| g.template.is_none() && g.customer_group.is_none())
    );
}

// ---------------------------------------------------------------------------------------------
// Expiry from an IdP claim
// ---------------------------------------------------------------------------------------------

#[test]
fn expiry_values_parse_from_rfc3339_generalized_time_and_unix() {
    let cases: [(&str, Option<UnixTime>); 9] = [
        ("2027-01-15T08:00:00Z", Some(NOW)),
        ("2027-01-15T09:00:00+01:00", Some(NOW)),
        ("20270115080000Z", Some(NOW)),
        ("1800000000", Some(NOW)),
        ("1800000000000", Some(NOW)),
        (" 1800000000 ", Some(NOW)),
        ("-5", None),
        ("next tuesday", None),
        ("20271315080000Z", None),
    ];
    for (raw, want) in cases {
        assert_eq!(parse_expiry(raw), want, "{raw}");
    }
}

fn expiring(claim_values: Option<&[&str]>) -> (Policy, Identity) {
    let p = policy(
        &["retail"],
        vec![Rule {
            expires_claim: Some("accessExpires".into()),
            ..allow("agency", &["retail"])
        }],
    );
    let mut id = ann();
    if let Some(v) = claim_values {
        id.attributes.insert("accessExpires".into(), strs(v));
    }
    (p, id)
}

#[test]
fn expires_claim_ends_the_grant_exactly_at_its_value() {
    let (p, id) = expiring(Some(&["1800000000"]));
    for (now, want) in [
        (NOW - 1, "allow:agency"),
        (NOW, "deny:agency"),
        (NOW + 1, "deny:agency"),
    ] {
        assert_eq!(
            decided_by(&p.decide(&id, &sid("retail"), now)),
            want,
            "at {now}"
        );
    }
    assert_eq!(p.grants(&id, NOW - 1)[0].expires_at, Some(NOW));
    assert_eq!(
        p.decide(&id, &sid("retail"), NOW),
        Decision::Deny {
            reason: DenyReason::Expired {
                rule: "agency".into(),
                at: NOW
            }
        }
    );
    assert!(
        p.grants(&id, NOW).is_empty(),
        "an expired grant vanishes from the portal"
    );
}

#[test]
fn expires_claim_missing_or_unreadable_grants_nothing_and_the_earliest_value_counts() {
    for (case, values) in [
        ("claim absent", None),
        ("garbage", Some(&["soon"][..])),
        ("one good, one garbage", Some(&["1900000000", "soon"][..])),
    ] {
        let (p, id) = expiring(values);
        assert_eq!(
            decided_by(&p.decide(&id, &sid("retail"), NOW)),
            "deny:default-deny",
            "{case}"
        );
    }
    let (p, id) = expiring(Some(&["1900000000", "1800000100"]));
    assert_eq!(p.grants(&id, NOW)[0].expires_at, Some(NOW + 100));
}

#[test]
fn the_earlier_of_not_after_and_the_claim_ends_the_grant() {
    let mut id = ann();
    id.attributes.insert("exp".into(), strs(&["1800000100"]));
    let rule = |not_after| Rule {
        expires_claim: Some("exp".into()),
        not_after,
        ..allow("r", &["retail"])
    };
    let p = policy(&["retail"], vec![rule(Some(NOW + 50))]);
    assert_eq!(p.grants(&id, NOW)[0].expires_at, Some(NOW + 50));
    let p = policy(&["retail"], vec![rule(Some(NOW + 500))]);
    assert_eq!(p.grants(&id, NOW)[0].expires_at, Some(NOW + 100));
}

#[test]
fn an_expired_allow_does_not_hide_a_current_one_and_deny_still_wins() {
    let expired = Rule {
        not_after: Some(NOW),
        ..allow("old", &["retail"])
    };
    let p = policy(
        &["retail"],
        vec![expired.clone(), allow("current", &["retail"])],
    );
    assert_eq!(
        decided_by(&p.decide(&ann(), &sid("retail"), NOW)),
        "allow:current"
    );
    let p = policy(&["retail"], vec![expired, deny("no", &["retail"])]);
    assert_eq!(
        decided_by(&p.decide(&ann(), &sid("retail"), NOW)),
        "deny:no"
    );
}

// ---------------------------------------------------------------------------------------------
// Launch: paths, session age, step-up
// ---------------------------------------------------------------------------------------------

fn agency_policy() -> Policy {
    Policy::new(
        vec![store("retail", &[], Some("standard"))],
        vec![staff_template()],
        vec![Rule::allow("agency", "agency", StoreSelector::All)],
    )
}

fn lp(p: &str) -> LocalPath {
    LocalPath::parse(p).unwrap()
}

#[test]
fn allowed_paths_are_prefixes_that_respect_segments_and_refuse_dot_segments() {
    let p = agency_policy();
    let id = ann_mfa();
    let cases = [
        ("/b2b/", true),
        ("/b2b/quotes?id=1", true),
        ("/account.php", true),
        ("/account.php?action=orders", true),
        ("/account.php/x", true),
        ("/account.phpx", false),
        ("/b2b", false),
        ("/", false),
        ("/admin", false),
        ("/b2b/../admin", false),
        ("/b2b/%2e%2e/admin", false),
        ("/b2b/./x", false),
    ];
    for (path, ok) in cases {
        let got = p.authorize_launch(&id, &sid("retail"), NOW, &lp(path));
        match (ok, got) {
            (true, Ok(d)) => assert_eq!(d.path().as_str(), path),
            (false, Err(LaunchRefusal::PathNotAllowed { rule, allowed })) => {
                assert_eq!(rule, "agency");
                assert_eq!(allowed, strs(&["/b2b/", "/account.php"]));
            }
            (_, got) => panic!("{path}: {got:?}"),
        }
    }
}

#[test]
fn a_grant_requiring_an_acr_refuses_a_weaker_session_with_step_up() {
    let p = agency_policy();
    let weak = Identity {
        auth: crate::identity::AuthContext {
            acr: Some("urn:example:contract:password".into()),
            ..ann_mfa().auth
        },
        ..ann_mfa()
    };
    for id in [
        weak,
        Identity {
            auth: Default::default(),
            signed_in_at: NOW,
            ..ann_mfa()
        },
    ] {
        assert_eq!(
            p.authorize_launch(&id, &sid("retail"), NOW, &lp("/b2b/"))
                .unwrap_err(),
            LaunchRefusal::StepUpRequired {
                rule: "agency".into(),
                acr: "urn:example:contract:mfa".into()
            }
        );
    }
    assert!(
        p.authorize_launch(&ann_mfa(), &sid("retail"), NOW, &lp("/b2b/"))
            .is_ok()
    );
    assert_eq!(p.required_acrs(), ["urn:example:contract:mfa"]);
}

#[test]
fn max_session_age_counts_from_the_gateway_sign_in_at_its_edge() {
    let p = agency_policy();
    let id = ann_mfa(); // signed in at NOW, grant allows 3600 s
    assert!(
        p.authorize_launch(&id, &sid("retail"), NOW + 3599, &lp("/b2b/"))
            .is_ok()
    );
    assert_eq!(
        p.authorize_launch(&id, &sid("retail"), NOW + 3600, &lp("/b2b/"))
            .unwrap_err(),
        LaunchRefusal::SessionTooOld {
            rule: "agency".into(),
            max_age: 3600
        }
    );
}

#[test]
fn launch_refusals_name_their_rule_and_a_stable_code() {
    let cases = [
        (
            LaunchRefusal::Denied(DenyReason::NoMatchingRule),
            "default-deny",
            "not_entitled",
        ),
        (
            LaunchRefusal::Denied(DenyReason::Expired {
                rule: "a".into(),
                at: NOW,
            }),
            "a",
            "grant_expired",
        ),
        (
            LaunchRefusal::PathNotAllowed {
                rule: "p".into(),
                allowed: vec![],
            },
            "p",
            "path_not_allowed",
        ),
        (
            LaunchRefusal::StepUpRequired {
                rule: "s".into(),
                acr: "x".into(),
            },
            "s",
            "step_up_required",
        ),
        (
            LaunchRefusal::SessionTooOld {
                rule: "o".into(),
                max_age: 60,
            },
            "o",
            "session_too_old",
        ),
    ];
    for (r, rule, code) in cases {
        assert_eq!((r.rule_label(), r.code()), (rule, code));
    }
    assert_eq!(
        DenyReason::Expired {
            rule: "agency".into(),
            at: NOW
        }
        .explain(),
        "your access through the rule \"agency\" expired at 2027-01-15T08:00:00Z"
    );
}

// ---------------------------------------------------------------------------------------------
// What `storegate check` warns about
// ---------------------------------------------------------------------------------------------

fn messages(p: &Policy) -> Vec<String> {
    p.lint(NOW).into_iter().map(|f| f.message).collect()
}

#[test]
fn lint_reports_stores_no_rule_grants_and_stores_without_template() {
    let p = Policy::new(
        vec![
            store("a", &[], Some("standard")),
            store("b", &[], None),
            store("c", &[], None),
        ],
        vec![staff_template()],
        vec![Rule::allow(
            "r",
            "merchandiser",
            StoreSelector::Only(vec![sid("a"), sid("b")]),
        )],
    );
    let m = messages(&p);
    assert!(
        m.iter()
            .any(|x| x.contains("store \"c\" has no rule that grants it")),
        "{m:?}"
    );
    assert!(
        m.iter().any(|x| x.contains("store \"b\" has no template")),
        "{m:?}"
    );
    assert!(!m.iter().any(|x| x.contains("store \"a\"")), "{m:?}");
}

#[test]
fn lint_reports_rules_that_can_never_match() {
    let p = Policy::new(
        vec![store("a", &["eu"], None)],
        vec![],
        vec![
            tagged("no-such-tag", &["apac"]),
            Rule {
                not_after: Some(NOW),
                ..allow("over", &["a"])
            },
            Rule::deny("nobody", StoreSelector::All),
            allow("shadowed", &["a"]),
        ],
    );
    let m = messages(&p);
    for want in [
        "rule \"no-such-tag\" can never match: its stores and store_tags select no configured store",
        "rule \"over\" can never match: its not_after (2027-01-15T08:00:00Z) has passed",
        "rule \"shadowed\" can never match: the unconditional deny rule \"nobody\" covers every store it grants",
    ] {
        assert!(m.iter().any(|x| x == want), "missing {want:?} in {m:?}");
    }
}

#[test]
fn lint_reports_overlapping_grants_and_how_they_resolve_unless_they_cannot_meet() {
    let p = policy(
        &["a", "b"],
        vec![
            allow("first", &["a", "b"]),
            allow("second", &["b"]),
            with(allow("am-only", &["a"]), idps(&["am"])),
            with(allow("partners-only", &["a"]), idps(&["partners"])),
        ],
    );
    let found: Vec<(Location, String)> =
        p.lint(NOW).into_iter().map(|f| (f.at, f.message)).collect();
    assert!(found.contains(&(
        Location::Rule(1),
        "rules \"first\" and \"second\" can both grant b; resolved by file order: \"first\" decides when both match".into()
    )), "{found:?}");
    assert!(
        !found
            .iter()
            .any(|(_, m)| m.contains("\"am-only\" and \"partners-only\"")),
        "disjoint idps cannot overlap: {found:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Properties over generated policies
// ---------------------------------------------------------------------------------------------

/// Rules may also name a store the policy does not configure.
const RULE_STORES: [&str; 5] = ["s0", "s1", "s2", "s3", "ghost"];
const GROUPS: [&str; 3] = ["g0", "G1", "g2"];
const DOMAINS: [&str; 2] = ["a.com", "B.com"];
const IDPS: [&str; 2] = ["i0", "i1"];
const DEPTS: [&str; 2] = ["x", "y"];

fn subset(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(pool.to_vec(), 0..=pool.len())
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

fn arb_conditions() -> impl Strategy<Value = Conditions> {
    (
        subset(&GROUPS),
        subset(&DOMAINS),
        subset(&IDPS),
        proptest::option::of(subset(&DEPTS)),
    )
        .prop_map(|(groups_any, email_domains, idps, dept)| Conditions {
            groups_any,
            email_domains,
            idps,
            attributes: dept
                .map(|d| BTreeMap::from([("dept".into(), d)]))
                .unwrap_or_default(),
            ..Default::default()
        })
}

fn arb_rule(effect: impl Strategy<Value = Effect>) -> impl Strategy<Value = Rule> {
    let selector = prop_oneof![
        Just(StoreSelector::All),
        subset(&RULE_STORES)
            .prop_map(|s| StoreSelector::Only(s.into_iter().map(StoreId::new).collect())),
    ];
    let when = proptest::option::of(-3i64..=3).prop_map(|o| o.map(|d| NOW + d));
    (
        effect,
        arb_conditions(),
        selector,
        subset(&TAGS),
        when.clone(),
        when,
        0u64..3,
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(effect, conditions, stores, store_tags, not_before, not_after, group, claim)| Rule {
                effect,
                conditions,
                store_tags,
                not_before,
                not_after,
                expires_claim: claim.then(|| "exp".to_owned()),
                grant: group_of(CustomerGroupRef::Id(group)),
                ..Rule::allow("", format!("role{group}"), stores)
            },
        )
}

const TAGS: [&str; 2] = ["eu", "NA"];

/// The generated policies' stores: two tagged, one tagged twice, one not.
fn arb_stores() -> Vec<StoreEntry> {
    vec![
        store("s0", &["eu"], None),
        store("s1", &["na"], None),
        store("s2", &["EU", "na"], None),
        store("s3", &[], None),
    ]
}

/// The same stores and templates, other rules.
fn rebuilt(p: &Policy, rules: Vec<Rule>) -> Policy {
    Policy::new(p.stores().to_vec(), p.templates().to_vec(), rules)
}

/// Scope computed without the policy's index.
fn naive_scope(r: &Rule, store: &StoreId) -> bool {
    let tags: Vec<String> = arb_stores()
        .into_iter()
        .find(|s| &s.id == store)
        .map(|s| s.tags)
        .unwrap_or_default();
    r.stores.covers(store)
        || r.store_tags
            .iter()
            .any(|t| tags.iter().any(|h| h.eq_ignore_ascii_case(t)))
}

/// Window check without the policy, claim expiry included.
fn naive_window(r: &Rule, id: &Identity, now: UnixTime) -> Option<Option<UnixTime>> {
    let mut end = r.not_after;
    if let Some(c) = &r.expires_claim {
        let t = id
            .attributes
            .get(c)?
            .iter()
            .map(|v| parse_expiry(v))
            .collect::<Option<Vec<_>>>()?;
        let t = t.into_iter().min()?;
        end = Some(end.map_or(t, |e| e.min(t)));
    }
    (r.not_before.is_none_or(|nb| now >= nb) && end.is_none_or(|e| now < e)).then_some(end)
}

fn arb_effect() -> impl Strategy<Value = Effect> {
    prop_oneof![Just(Effect::Allow), Just(Effect::Deny)]
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    proptest::collection::vec(arb_rule(arb_effect()), 0..8).prop_map(|rules| {
        Policy::new(
            arb_stores(),
            vec![],
            rules
                .into_iter()
                .enumerate()
                .map(|(i, r)| Rule {
                    name: format!("r{i}"),
                    ..r
                })
                .collect(),
        )
    })
}

fn arb_identity() -> impl Strategy<Value = Identity> {
    let email = proptest::option::of(prop_oneof![
        Just("u@a.com".to_owned()),
        Just("u@b.com".to_owned()),
        Just("u@c.com".to_owned()),
    ]);
    (
        subset(&["g0", "g1", "G2", "g3"]),
        email,
        proptest::sample::select(IDPS.to_vec()),
        subset(&DEPTS),
        proptest::option::of(prop_oneof![
            (-3i64..=3).prop_map(|d| (NOW + d).to_string()),
            Just("garbage".to_owned()),
        ]),
        any::<bool>(),
    )
        .prop_map(|(groups, email, idp, dept, exp, email_verified)| {
            let mut attributes = BTreeMap::from([("dept".into(), dept)]);
            if let Some(e) = exp {
                attributes.insert("exp".into(), vec![e]);
            }
            Identity {
                idp: IdpId::new(idp),
                email,
                email_verified,
                groups,
                attributes,
                ..ann()
            }
        })
}

fn arb_now() -> impl Strategy<Value = UnixTime> {
    (-4i64..=4).prop_map(|d| NOW + d)
}

/// Per configured store: the grant, if any.
fn granted(p: &Policy, id: &Identity, now: UnixTime) -> Vec<(StoreId, Option<Grant>)> {
    p.evaluate(id, now)
        .into_iter()
        .map(|(s, d)| match d {
            Decision::Allow { grant, .. } => (s, Some(grant)),
            Decision::Deny { .. } => (s, None),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn adding_a_deny_rule_never_widens_access(
        p in arb_policy(),
        added in arb_rule(Just(Effect::Deny)),
        at in any::<proptest::sample::Index>(),
        id in arb_identity(),
        now in arb_now(),
    ) {
        let before = granted(&p, &id, now);
        let mut rules = p.rules().to_vec();
        rules.insert(at.index(rules.len() + 1), Rule { name: "added-deny".into(), ..added });
        let q = rebuilt(&p, rules);
        let after = granted(&q, &id, now);
        for ((store, b), (_, a)) in before.iter().zip(&after) {
            if let Some(a) = a {
                // Still allowed: by the very same grant, since the allows that apply are unchanged.
                prop_assert_eq!(Some(a), b.as_ref(), "store {}", store);
            }
        }
    }

    #[test]
    fn nobody_gets_a_store_no_applicable_allow_rule_covers(
        p in arb_policy(),
        id in arb_identity(),
        now in arb_now(),
        probe in proptest::sample::select(RULE_STORES.to_vec()),
    ) {
        let store = sid(probe);
        if let Decision::Allow { grant, overridden } = p.decide(&id, &store, now) {
            prop_assert!(p.has_store(&store), "granted unconfigured store {}", store);
            prop_assert_eq!(&grant.store, &store);
            let rule = p.rules().iter().find(|r| r.name == grant.rule);
            prop_assert!(rule.is_some(), "grant names no rule");
            let rule = rule.unwrap();
            prop_assert_eq!(rule.effect, Effect::Allow);
            prop_assert!(naive_scope(rule, &store));
            prop_assert!(p.rules_for(&store).any(|r| r == rule));
            prop_assert!(naive_window(rule, &id, now).is_some());
            prop_assert!(rule.conditions.matches_as(Effect::Allow, &id));
            prop_assert_eq!(&grant.role, &rule.role);
            prop_assert_eq!(&grant.customer_group, &rule.grant.customer_group);
            prop_assert_eq!(grant.expires_at, naive_window(rule, &id, now).flatten());
            // No applicable deny exists, and the deciding rule is the first applicable allow.
            let applicable: Vec<&Rule> = p.rules().iter()
                .filter(|r| naive_scope(r, &store) && naive_window(r, &id, now).is_some() && r.conditions.matches_as(r.effect, &id))
                .collect();
            prop_assert!(applicable.iter().all(|r| r.effect == Effect::Allow));
            prop_assert_eq!(&applicable[0].name, &grant.rule);
            let rest: Vec<String> = applicable[1..].iter().map(|r| r.name.clone()).collect();
            prop_assert_eq!(overridden, rest);
        }
    }

    #[test]
    fn the_request_path_grants_are_exactly_the_explained_allows(
        p in arb_policy(),
        id in arb_identity(),
        now in arb_now(),
    ) {
        let explained: Vec<Grant> = granted(&p, &id, now).into_iter().filter_map(|(_, g)| g).collect();
        prop_assert_eq!(p.grants(&id, now), explained);
    }

    /// The launch's channel set comes from `granted_stores_where`: the very stores the grants
    /// name, for any selection.
    #[test]
    fn the_granted_stores_are_the_stores_of_the_grants(
        p in arb_policy(),
        id in arb_identity(),
        now in arb_now(),
        skip in proptest::sample::select(RULE_STORES.to_vec()),
    ) {
        let keep = |s: &StoreId| s.as_str() != skip;
        let from_grants: Vec<StoreId> =
            p.grants_where(&id, now, keep).into_iter().map(|g| g.store).collect();
        let granted: Vec<StoreId> =
            p.granted_stores_where(&id, now, keep).into_iter().cloned().collect();
        prop_assert_eq!(granted, from_grants);
    }

    /// One evaluation shared by a launch's decisions (issue 15) decides each store, and the
    /// granted stores, exactly as a fresh evaluation per question does, in any order.
    #[test]
    fn one_shared_evaluation_decides_as_fresh_ones_do(
        p in arb_policy(),
        id in arb_identity(),
        now in arb_now(),
        order in Just(RULE_STORES.to_vec()).prop_shuffle(),
        skip in proptest::sample::select(RULE_STORES.to_vec()),
    ) {
        let path = lp("/");
        let outcome = |r: Result<LaunchDecision, LaunchRefusal>| r.map(|d| d.grant().clone());
        let mut shared = p.evaluation(&id, now);
        for store in &order {
            let store = StoreId::new(*store);
            prop_assert_eq!(
                outcome(shared.authorize_launch(&store, &path)),
                outcome(p.authorize_launch(&id, &store, now, &path))
            );
        }
        let keep = |s: &StoreId| s.as_str() != skip;
        let fresh: Vec<StoreId> = p.grants_where(&id, now, keep).into_iter().map(|g| g.store).collect();
        let granted: Vec<StoreId> = shared.granted_stores_where(keep).into_iter().cloned().collect();
        prop_assert_eq!(granted, fresh);
    }

    #[test]
    fn removing_an_allow_rule_never_widens_access(
        p in arb_policy(),
        which in any::<proptest::sample::Index>(),
        id in arb_identity(),
        now in arb_now(),
    ) {
        let allows: Vec<usize> = p.rules().iter().enumerate()
            .filter(|(_, r)| r.effect == Effect::Allow)
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!allows.is_empty());
        let mut rules = p.rules().to_vec();
        rules.remove(allows[which.index(allows.len())]);
        let q = rebuilt(&p, rules);
        let before = granted(&p, &id, now);
        let after = granted(&q, &id, now);
        for ((store, b), (_, a)) in before.iter().zip(&after) {
            prop_assert!(a.is_none() || b.is_some(), "removing an allow granted {}", store);
        }
    }
}
