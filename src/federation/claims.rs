//! Claim mapping: verified claims -> [`Identity`], with Access Manager's quirks.
//!
//! Access Manager (reference/OPENTEXT.md) releases raw LDAP names (`mail`, `givenName`, `sn`),
//! multi-valued claims, group values as full eDirectory DNs, and attributes without a remote name
//! under an XPath-like name such as `/UserAttribute[@ldap:targetAttribute="mail"]`. All of that is
//! handled here, purely, so both protocols share it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::VerifiedClaims;
use super::settings::ClaimMapping;
use crate::clock::UnixTime;
use crate::identity::Identity;

/// Looks a claim up by its configured name, then by Access Manager's XPath form of that name.
fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| {
        let xpath = format!("/UserAttribute[@ldap:targetAttribute=\"{name}\"]");
        claims.get(&xpath)
    })
}

/// Every string value of a claim: a string, a number or bool, or an array of those.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Null | Value::Object(_) => Vec::new(),
    }
}

/// The first non-empty string value of a claim.
fn first(claims: &Map<String, Value>, name: &str) -> Option<String> {
    lookup(claims, name).map(strings).and_then(|v| {
        v.into_iter()
            .map(|s| s.trim().to_owned())
            .find(|s| !s.is_empty())
    })
}

/// `cn=bc-merch,ou=groups,o=corp` -> `bc-merch`; a value that is not a DN is returned as is.
/// Handles escaped commas (`cn=Sales\, EMEA,ou=groups`) in the first RDN.
pub fn dn_to_name(value: &str) -> String {
    let Some((attr, rest)) = value.split_once('=') else {
        return value.to_owned();
    };
    if attr.is_empty() || !attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return value.to_owned();
    }
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            ',' | '+' => break,
            _ => out.push(c),
        }
    }
    let out = out.trim();
    if out.is_empty() {
        value.to_owned()
    } else {
        out.to_owned()
    }
}

/// Whether the IdP's `email_verified` claim (OIDC Core 5.1) is true. JSON `true`, or the string
/// "true" that some providers (Access Manager attribute sets among them) release; anything else,
/// an array included, is not a yes.
fn says_verified(claims: &Map<String, Value>, mapping: &ClaimMapping) -> bool {
    let Some(name) = &mapping.email_verified else {
        return false;
    };
    match lookup(claims, name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// Builds the normalized identity from verified claims.
pub fn map_identity(
    v: &VerifiedClaims,
    mapping: &ClaimMapping,
    signed_in_at: UnixTime,
) -> Identity {
    let c = v.claims();
    let given_name = first(c, &mapping.given_name);
    let family_name = first(c, &mapping.family_name);
    let name = first(c, &mapping.name).or_else(|| match (&given_name, &family_name) {
        (Some(g), Some(f)) => Some(format!("{g} {f}")),
        (Some(g), None) => Some(g.clone()),
        (None, Some(f)) => Some(f.clone()),
        (None, None) => None,
    });
    let mut groups: Vec<String> = lookup(c, &mapping.groups)
        .map(strings)
        .unwrap_or_default()
        .into_iter()
        .map(|g| {
            if mapping.group_dn_to_name {
                dn_to_name(&g)
            } else {
                g
            }
        })
        .filter(|g| !g.is_empty())
        .collect();
    groups.sort();
    groups.dedup();
    let mut roles: Vec<String> = lookup(c, &mapping.roles).map(strings).unwrap_or_default();
    roles.sort();
    roles.dedup();
    let attributes: BTreeMap<String, Vec<String>> = c
        .iter()
        .map(|(k, v)| (k.clone(), strings(v)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let email = first(c, &mapping.email).map(|e| e.to_ascii_lowercase());
    let email_verified = email.is_some() && (mapping.trust_email || says_verified(c, mapping));
    Identity {
        subject: v.subject().to_owned(),
        idp: v.idp().clone(),
        email,
        email_verified,
        given_name,
        family_name,
        name,
        groups,
        roles,
        attributes,
        auth: v.auth().clone(),
        signed_in_at,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::identity::IdpId;

    fn verified(claims: Value) -> VerifiedClaims {
        let Value::Object(map) = claims else {
            panic!("object")
        };
        VerifiedClaims::dangerous_unverified_for_tests(IdpId::new("nam"), "u1".into(), map)
    }

    #[test]
    fn maps_standard_claims() {
        let id = map_identity(
            &verified(
                json!({"email": "Mia@Corp.Example", "given_name": "Mia", "family_name": "M", "groups": ["b", "a", "b"]}),
            ),
            &ClaimMapping::default(),
            100,
        );
        assert_eq!(id.email.as_deref(), Some("mia@corp.example"));
        assert_eq!(id.name.as_deref(), Some("Mia M"));
        assert_eq!(id.groups, vec!["a", "b"]);
        assert_eq!(id.subject, "u1");
        assert_eq!(id.signed_in_at, 100);
    }

    #[test]
    fn maps_access_manager_ldap_names_xpath_names_and_multi_values() {
        let mapping = ClaimMapping {
            email: "mail".into(),
            given_name: "givenName".into(),
            family_name: "sn".into(),
            groups: "groupMembership".into(),
            group_dn_to_name: true,
            ..ClaimMapping::default()
        };
        let id = map_identity(
            &verified(json!({
                "mail": ["first@corp.example", "second@corp.example"],
                "givenName": "Finn",
                "sn": ["Finance"],
                "/UserAttribute[@ldap:targetAttribute=\"groupMembership\"]":
                    ["cn=bc-finance,ou=groups,o=corp", "cn=Sales\\, EMEA,ou=groups,o=corp"],
            })),
            &mapping,
            0,
        );
        assert_eq!(id.email.as_deref(), Some("first@corp.example"));
        assert_eq!(id.name.as_deref(), Some("Finn Finance"));
        assert_eq!(id.groups, vec!["Sales, EMEA", "bc-finance"]);
    }

    #[test]
    fn email_counts_as_verified_only_when_the_idp_vouches() {
        let verified_with = |claims: Value, mapping: &ClaimMapping| {
            map_identity(&verified(claims), mapping, 0).email_verified
        };
        let oidc = ClaimMapping::default();
        let e = "a@corp.example";
        assert!(verified_with(
            json!({"email": e, "email_verified": true}),
            &oidc
        ));
        assert!(verified_with(
            json!({"email": e, "email_verified": "true"}),
            &oidc
        ));
        assert!(!verified_with(
            json!({"email": e, "email_verified": false}),
            &oidc
        ));
        assert!(!verified_with(
            json!({"email": e, "email_verified": "yes"}),
            &oidc
        ));
        assert!(!verified_with(
            json!({"email": e, "email_verified": [true]}),
            &oidc
        ));
        assert!(!verified_with(json!({"email": e}), &oidc));
        // No email, nothing to vouch for.
        assert!(!verified_with(json!({"email_verified": true}), &oidc));
        let trusting = ClaimMapping {
            trust_email: true,
            ..ClaimMapping::default()
        };
        assert!(verified_with(
            json!({"email": e, "email_verified": false}),
            &trusting
        ));
        // SAML: an attribute that happens to be called email_verified does not count.
        let saml = ClaimMapping {
            email_verified: None,
            ..ClaimMapping::default()
        };
        assert!(!verified_with(
            json!({"email": e, "email_verified": "true"}),
            &saml
        ));
        let saml_trusted = ClaimMapping {
            trust_email: true,
            ..saml
        };
        assert!(verified_with(json!({"email": e}), &saml_trusted));
    }

    #[test]
    fn keeps_dns_whole_unless_configured() {
        let id = map_identity(
            &verified(json!({"groups": "cn=bc-merch,ou=groups,o=corp"})),
            &ClaimMapping::default(),
            0,
        );
        assert_eq!(id.groups, vec!["cn=bc-merch,ou=groups,o=corp"]);
    }

    #[test]
    fn dn_to_name_leaves_plain_names_alone() {
        assert_eq!(dn_to_name("bc-merch"), "bc-merch");
        assert_eq!(dn_to_name("cn=x,o=y"), "x");
        assert_eq!(dn_to_name("a=b=c"), "b=c");
        assert_eq!(dn_to_name("weird name=1"), "weird name=1");
    }
}
