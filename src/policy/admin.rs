//! Who may use the IT console (`/admin`, issue 13): the `[admin]` table, a rule with the
//! conditions of a `[[rule]]` and no stores. Pure like the rest of `policy`: the web layer asks,
//! this decides, and the answer names the rule either way so the 403 page and the audit event
//! tell the same story.

use super::{Conditions, Effect};
use crate::identity::Identity;

/// `[admin]`, validated: at least one condition is set (an empty one would let every signed-in
/// person in, which `storegate check` refuses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRule {
    /// `name`, default `"admin"`: how the decision and the audit event call this rule.
    pub name: String,
    pub conditions: Conditions,
}

/// Proof that the policy let this identity into the console. Only [`AdminRule::decide`] makes
/// one, so an admin handler that takes it cannot run for someone the rule refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAccess {
    rule: String,
}

impl AdminAccess {
    /// The rule that admitted the identity.
    pub fn rule(&self) -> &str {
        &self.rule
    }
}

/// The answer for one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminDecision {
    Allow(AdminAccess),
    /// The identity does not meet the rule's conditions; names the rule.
    Deny {
        rule: String,
    },
}

impl AdminRule {
    /// Decides with allow-rule semantics: an email domain counts only when the IdP vouches for
    /// the address (see the module docs of `policy`), like every other grant.
    pub fn decide(&self, id: &Identity) -> AdminDecision {
        if self.conditions.matches_as(Effect::Allow, id) {
            AdminDecision::Allow(AdminAccess {
                rule: self.name.clone(),
            })
        } else {
            AdminDecision::Deny {
                rule: self.name.clone(),
            }
        }
    }
}

impl Conditions {
    /// Whether no condition kind is set (such a rule matches everyone).
    pub fn is_empty(&self) -> bool {
        self.groups_any.is_empty()
            && self.roles_any.is_empty()
            && self.email_domains.is_empty()
            && self.idps.is_empty()
            && self.attributes.is_empty()
            && self.attribute_regex.is_empty()
            && self.acr_any.is_empty()
            && self.amr_any.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{AuthContext, IdpId};

    fn person(groups: &[&str], email: &str, verified: bool) -> Identity {
        Identity {
            subject: "u-1".into(),
            idp: IdpId::new("nam"),
            email: Some(email.into()),
            email_verified: verified,
            given_name: None,
            family_name: None,
            name: None,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            roles: vec![],
            attributes: Default::default(),
            auth: AuthContext::default(),
            signed_in_at: 0,
        }
    }

    fn admins() -> AdminRule {
        AdminRule {
            name: "it-admins".into(),
            conditions: Conditions {
                groups_any: vec!["storegate-admins".into()],
                ..Conditions::default()
            },
        }
    }

    #[test]
    fn a_member_of_the_admin_group_is_allowed_and_the_rule_is_named() {
        match admins().decide(&person(&["Storegate-Admins"], "a@corp.example", true)) {
            AdminDecision::Allow(access) => assert_eq!(access.rule(), "it-admins"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn anyone_else_is_denied_by_the_named_rule() {
        assert_eq!(
            admins().decide(&person(&["bc-merchandisers"], "a@corp.example", true)),
            AdminDecision::Deny {
                rule: "it-admins".into()
            }
        );
    }

    #[test]
    fn an_unverified_email_domain_does_not_make_an_admin() {
        let rule = AdminRule {
            name: "admin".into(),
            conditions: Conditions {
                email_domains: vec!["corp.example".into()],
                ..Conditions::default()
            },
        };
        assert!(matches!(
            rule.decide(&person(&[], "a@corp.example", false)),
            AdminDecision::Deny { .. }
        ));
        assert!(matches!(
            rule.decide(&person(&[], "a@corp.example", true)),
            AdminDecision::Allow(_)
        ));
    }

    #[test]
    fn conditions_know_when_nothing_is_set() {
        assert!(Conditions::default().is_empty());
        assert!(!admins().conditions.is_empty());
    }
}
