//! Validation of `[admin]`: who may use the IT console (issue 13).

use super::super::diag::{Seg, key};
use super::super::file::FileConfig;
use super::Checker;
use crate::policy::admin::AdminRule;
use crate::policy::{AttrRegex, Conditions};

pub(super) fn admin(c: &mut Checker<'_>, f: &FileConfig, idps: &[&str]) -> Option<AdminRule> {
    let a = f.admin.as_ref()?;
    let at = |k: &str| [key("admin"), key(k)];
    let name = a.name.clone().unwrap_or_else(|| "admin".to_owned());
    if name.trim().is_empty() {
        c.error(
            &at("name"),
            "`admin.name` is empty; leave it out for \"admin\"",
        );
    }
    for idp in &a.idps {
        if !idps.contains(&idp.as_str()) {
            c.error(
                &at("idps"),
                format!("`admin.idps` names idp \"{idp}\", which is not configured"),
            );
        }
    }
    let mut attribute_regex = std::collections::BTreeMap::new();
    for (attr, pattern) in &a.attribute_regex {
        match AttrRegex::new(pattern) {
            Ok(re) => {
                attribute_regex.insert(attr.clone(), re);
            }
            Err(e) => c.error(
                &[key("admin"), key("attribute_regex"), key(attr)],
                format!(
                    "`admin.attribute_regex.{attr}` is not a valid regex: {}",
                    e.to_string().lines().last().unwrap_or("")
                ),
            ),
        }
    }
    for (attr, wanted) in &a.attributes {
        if wanted.values().is_empty() {
            c.error(
                &[key("admin"), key("attributes"), key(attr)],
                format!("`admin.attributes.{attr}` lists no value, so it can never match"),
            );
        }
    }
    let conditions = Conditions {
        groups_any: a.groups_any.clone(),
        roles_any: a.roles_any.clone(),
        email_domains: a
            .email_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        idps: a.idps.clone(),
        attributes: a
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.values()))
            .collect(),
        attribute_regex,
        acr_any: a.acr_any.clone(),
        amr_any: a.amr_any.clone(),
    };
    if conditions.is_empty() && a.attribute_regex.is_empty() {
        // Fail closed: a console open to every signed-in person is never what was meant.
        c.error(
            &[key("admin")] as &[Seg],
            "`[admin]` sets no condition, so every signed-in person would be an admin; add e.g. groups_any = [\"storegate-admins\"]",
        );
        return None;
    }
    Some(AdminRule { name, conditions })
}
