//! Validation of `[[permission_set]]` and of the `control_panel` grant key that names one (on
//! `[template.roles.X]` and on allow `[[rule]]`s).

use std::collections::{BTreeMap, BTreeSet};

use super::super::Store;
use super::super::diag::{Diagnostic, Seg, key};
use super::super::file::FileConfig;
use super::Checker;
use crate::policy::{ControlPanelSetup, KNOWN_PERMISSIONS};

/// `Manage_Products`: an upper-case letter, then letters and `_` (the Account API's shape).
fn looks_like_code(code: &str) -> bool {
    let mut chars = code.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && code.len() > 1
        && chars.all(|c| c.is_ascii_alphabetic() || c == '_')
}

/// The sets by name, each problem reported at its line.
pub(super) fn permission_sets(
    c: &mut Checker<'_>,
    f: &FileConfig,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (i, set) in f.permission_sets.iter().enumerate() {
        let at = |k: &str| [key("permission_set"), Seg::Index(i), key(k)];
        if set.name.trim().is_empty() {
            c.error(&at("name"), "[[permission_set]] `name` is empty");
            continue;
        }
        if out.contains_key(&set.name) {
            c.error(
                &at("name"),
                format!("duplicate [[permission_set]] name \"{}\"", set.name),
            );
            continue;
        }
        if set.permissions.is_empty() {
            c.error(
                &at("permissions"),
                format!(
                    "[[permission_set]] \"{}\" lists no permissions (codes like \"Manage_Products\")",
                    set.name
                ),
            );
        }
        for code in &set.permissions {
            if !looks_like_code(code) {
                c.error(
                    &at("permissions"),
                    format!(
                        "[[permission_set]] \"{}\": \"{code}\" is not a permission code as the Account API reports them (like \"Manage_Products\")",
                        set.name
                    ),
                );
            }
        }
        out.insert(set.name.clone(), set.permissions.iter().cloned().collect());
    }
    out
}

/// `control_panel` must name a configured set, and only where something is granted.
pub(super) fn grant_keys(
    c: &mut Checker<'_>,
    f: &FileConfig,
    sets: &BTreeMap<String, BTreeSet<String>>,
) {
    let unknown = |name: &str| {
        let known: Vec<&str> = sets.keys().map(String::as_str).collect();
        format!(
            "`control_panel` names permission set \"{name}\", which is not configured (configured: {})",
            if known.is_empty() {
                "none; add a [[permission_set]]".to_owned()
            } else {
                known.join(", ")
            }
        )
    };
    for (i, t) in f.templates.iter().enumerate() {
        for (role, g) in &t.roles {
            if let Some(name) = &g.control_panel
                && !sets.contains_key(name)
            {
                let path = [
                    key("template"),
                    Seg::Index(i),
                    key("roles"),
                    key(role),
                    key("control_panel"),
                ];
                c.error(&path, unknown(name));
            }
        }
    }
    for (i, r) in f.rules.iter().enumerate() {
        let Some(name) = &r.control_panel else {
            continue;
        };
        let path = [key("rule"), Seg::Index(i), key("control_panel")];
        if r.effect.as_deref() == Some("deny") {
            c.error(
                &path,
                format!(
                    "deny rule \"{}\" cannot set `control_panel`: it grants nothing",
                    r.name
                ),
            );
        } else if !sets.contains_key(name) {
            c.error(&path, unknown(name));
        }
    }
}

/// What the policy needs to turn grants into control-panel grants per store hash.
pub(super) fn setup(
    sets: BTreeMap<String, BTreeSet<String>>,
    stores: &[Store],
) -> ControlPanelSetup {
    ControlPanelSetup {
        permission_sets: sets,
        store_accounts: stores
            .iter()
            .map(|s| (s.id.clone(), s.account.clone()))
            .collect(),
    }
}

/// Warnings: codes BigCommerce does not document (a typo shows up only as drift otherwise).
pub(super) fn unknown_codes(c: &Checker<'_>, f: &FileConfig) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, set) in f.permission_sets.iter().enumerate() {
        for code in &set.permissions {
            if looks_like_code(code) && !KNOWN_PERMISSIONS.contains(&code.as_str()) {
                out.push(Diagnostic {
                    line: c
                        .lines
                        .line_of(&[key("permission_set"), Seg::Index(i), key("permissions")]),
                    message: format!(
                        "[[permission_set]] \"{}\": \"{code}\" is not a permission code BigCommerce documents; check its spelling against the `permissions` the Account API reports",
                        set.name
                    ),
                });
            }
        }
    }
    out
}
