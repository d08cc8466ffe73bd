//! Validation of `[admin]`: who may use the IT console (issue 13).

use super::super::diag::{Seg, key};
use super::super::file::FileConfig;
use super::Checker;
use super::conditions::Owner;
use crate::policy::admin::AdminRule;

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
    let conditions = super::conditions::validate_conditions(
        c,
        &[key("admin")],
        Owner::Admin,
        &a.conditions,
        idps,
    );
    if conditions.is_empty() && a.conditions.attribute_regex.is_empty() {
        // Fail closed: a console open to every signed-in person is never what was meant.
        c.error(
            &[key("admin")] as &[Seg],
            "`[admin]` sets no condition, so every signed-in person would be an admin; add e.g. groups_any = [\"storegate-admins\"]",
        );
        return None;
    }
    Some(AdminRule { name, conditions })
}
