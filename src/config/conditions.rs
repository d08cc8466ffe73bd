//! The shape of the conditions `[[rule]]`, `[[route]]` and `[admin]` share (embedded in each with
//! `#[serde(flatten)]`), in a module of its own so that `file` and `route` both use it without
//! importing each other.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The conditions `[[rule]]`, `[[route]]` and `[admin]` share, written once and embedded in each
/// with `#[serde(flatten)]`. Every kind that is set must hold; the values inside one kind are
/// OR-ed. Validated by `validate::conditions` into a `policy::Conditions`.
#[derive(Debug, Default, Deserialize)]
pub struct ConditionsFile {
    /// Matches when the user is in any of these groups (names, or DNs compared case-insensitively).
    #[serde(default)]
    pub groups_any: Vec<String>,
    /// Matches when the user has any of these roles (case-insensitive).
    #[serde(default)]
    pub roles_any: Vec<String>,
    /// Matches when the user's email domain is one of these; counts only when the IdP vouches
    /// for the address.
    #[serde(default)]
    pub email_domains: Vec<String>,
    /// Matches only sign-ins through these IdP ids.
    #[serde(default)]
    pub idps: Vec<String>,
    /// Matches when every listed attribute has the value (a string) or one of the values (a list).
    #[serde(default)]
    pub attributes: BTreeMap<String, OneOrMany>,
    /// Matches when every listed attribute has a value the regex matches whole (anchored).
    #[serde(default)]
    pub attribute_regex: BTreeMap<String, String>,
    /// Matches when the session's acr is one of these authentication contracts.
    #[serde(default)]
    pub acr_any: Vec<String>,
    /// Matches when the session's amr includes one of these methods.
    #[serde(default)]
    pub amr_any: Vec<String>,
    /// Keys neither this nor the table embedding it knows. `#[serde(flatten)]` hides them from
    /// the loader's `serde_ignored` walk, so they are caught here and reported as unknown keys.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

/// One attribute value, or a list of accepted values.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}
