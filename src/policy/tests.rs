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
// Properties over generated policies
// ---------------------------------------------------------------------------------------------

const STORES: [&str; 4] = ["s0", "s1", "s2", "s3"];
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
        when.clone(),
        when,
        0u64..3,
    )
        .prop_map(
            |(effect, conditions, stores, not_before, not_after, group)| Rule {
                effect,
                conditions,
                not_before,
                not_after,
                grant: group_of(CustomerGroupRef::Id(group)),
                ..Rule::allow("", format!("role{group}"), stores)
            },
        )
}

fn arb_effect() -> impl Strategy<Value = Effect> {
    prop_oneof![Just(Effect::Allow), Just(Effect::Deny)]
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    proptest::collection::vec(arb_rule(arb_effect()), 0..8).prop_map(|rules| {
        policy(
            &STORES,
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
    )
        .prop_map(|(groups, email, idp, dept)| Identity {
            idp: IdpId::new(idp),
            email,
            groups,
            attributes: BTreeMap::from([("dept".into(), dept)]),
            ..ann()
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
        let q = policy(&STORES, rules);
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
            prop_assert!(rule.stores.covers(&store));
            prop_assert!(p.rules_for(&store).any(|r| r == rule));
            prop_assert!(rule.in_window(now));
            prop_assert!(rule.conditions.matches(&id));
            prop_assert_eq!(&grant.role, &rule.role);
            prop_assert_eq!(&grant.customer_group, &rule.grant.customer_group);
            prop_assert_eq!(grant.expires_at, rule.not_after);
            // No applicable deny exists, and the deciding rule is the first applicable allow.
            let applicable: Vec<&Rule> = p.rules().iter()
                .filter(|r| r.stores.covers(&store) && r.in_window(now) && r.conditions.matches(&id))
                .collect();
            prop_assert!(applicable.iter().all(|r| r.effect == Effect::Allow));
            prop_assert_eq!(&applicable[0].name, &grant.rule);
            let rest: Vec<String> = applicable[1..].iter().map(|r| r.name.clone()).collect();
            prop_assert_eq!(overridden, rest);
        }
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
        let q = policy(&STORES, rules);
        let before = granted(&p, &id, now);
        let after = granted(&q, &id, now);
        for ((store, b), (_, a)) in before.iter().zip(&after) {
            prop_assert!(a.is_none() || b.is_some(), "removing an allow granted {}", store);
        }
    }
}
