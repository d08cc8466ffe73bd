//! The conditions `[[rule]]`, `[[route]]` and `[admin]` share: one validation, one
//! `policy::Conditions` builder, one place reporting the unknown keys `#[serde(flatten)]` hides.

use super::super::diag::{Seg, key};
use super::super::file::{ConditionsFile, FileConfig};
use super::Checker;
use crate::policy::{AttrRegex, Conditions};

/// Whose conditions these are, for the messages: `rule "x"`, `route "x"`, or `[admin]`.
#[derive(Clone, Copy)]
pub(super) enum Owner<'a> {
    Rule(&'a str),
    Route(&'a str),
    Admin,
}

impl Owner<'_> {
    /// `rule "x" names idp ...` / `` `admin.idps` names idp ... ``.
    fn names_idp(self, idp: &str) -> String {
        match self {
            Owner::Rule(name) => {
                format!("rule \"{name}\" names idp \"{idp}\", which is not configured")
            }
            Owner::Route(name) => {
                format!("route \"{name}\" names idp \"{idp}\", which is not configured")
            }
            Owner::Admin => format!("`admin.idps` names idp \"{idp}\", which is not configured"),
        }
    }

    /// `rule "x": `attributes.dept`` / `` `admin.attributes.dept` ``.
    fn key(self, k: &str) -> String {
        match self {
            Owner::Rule(name) => format!("rule \"{name}\": `{k}`"),
            Owner::Route(name) => format!("route \"{name}\": `{k}`"),
            Owner::Admin => format!("`admin.{k}`"),
        }
    }
}

/// Checks one table's conditions (`table` is its key path, e.g. `rule[2]`) and builds them:
/// IdP ids must be configured, regexes must compile (one that does not is left out, its error
/// recorded), an attribute must list a value. Email domains compare in lower case.
pub(super) fn validate_conditions(
    c: &mut Checker<'_>,
    table: &[Seg],
    owner: Owner<'_>,
    f: &ConditionsFile,
    idps: &[&str],
) -> Conditions {
    let at = |k: &[&str]| {
        let mut path = table.to_vec();
        path.extend(k.iter().map(|k| key(k)));
        path
    };
    for idp in &f.idps {
        if !idps.contains(&idp.as_str()) {
            c.error(&at(&["idps"]), owner.names_idp(idp));
        }
    }
    let mut attribute_regex = std::collections::BTreeMap::new();
    for (name, pattern) in &f.attribute_regex {
        match AttrRegex::new(pattern) {
            Ok(re) => {
                attribute_regex.insert(name.clone(), re);
            }
            Err(e) => c.error(
                &at(&["attribute_regex", name]),
                format!(
                    "{} is not a valid regex: {}",
                    owner.key(&format!("attribute_regex.{name}")),
                    e.to_string().lines().last().unwrap_or("")
                ),
            ),
        }
    }
    for (name, wanted) in &f.attributes {
        if wanted.values().is_empty() {
            c.error(
                &at(&["attributes", name]),
                format!(
                    "{} lists no value, so it can never match",
                    owner.key(&format!("attributes.{name}"))
                ),
            );
        }
    }
    Conditions {
        groups_any: f.groups_any.clone(),
        roles_any: f.roles_any.clone(),
        email_domains: f
            .email_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        idps: f.idps.clone(),
        attributes: f
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.values()))
            .collect(),
        attribute_regex,
        acr_any: f.acr_any.clone(),
        amr_any: f.amr_any.clone(),
    }
}

/// The key paths of unknown keys in every table that embeds [`ConditionsFile`]
/// (`rule[0].grups_any`): `serde_ignored` reports all others, but cannot see past a flatten.
pub(super) fn unknown_keys(f: &FileConfig) -> Vec<Vec<Seg>> {
    let rules = f
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (vec![key("rule"), Seg::Index(i)], &r.conditions));
    let routes = f
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| (vec![key("route"), Seg::Index(i)], &r.conditions));
    let admin = f.admin.iter().map(|a| (vec![key("admin")], &a.conditions));
    rules
        .chain(routes)
        .chain(admin)
        .flat_map(|(table, cond)| {
            cond.unknown.keys().map(move |k| {
                let mut path = table.clone();
                path.push(key(k));
                path
            })
        })
        .collect()
}
