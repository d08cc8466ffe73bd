//! Validation of `[scim]` and `[provisioning]`.

use std::path::PathBuf;

use super::super::diag::key;
use super::super::file::FileConfig;
use super::super::provisioning::{
    Deprovision, ProvisioningConfig, QueueStorage, ScimConfig, ScimStorage, SubjectAttribute,
};
use super::Checker;

pub(super) fn scim(c: &mut Checker<'_>, f: &FileConfig) -> Option<ScimConfig> {
    let s = &f.scim;
    if !s.enabled {
        return None;
    }
    let table = [key("scim")];
    let bearer_token = c.secret(
        &table,
        "bearer_token",
        &s.bearer_token,
        Some(&s.bearer_token_file),
        false,
    );
    let basic_password = c.secret(
        &table,
        "basic_password",
        &s.basic_password,
        Some(&s.basic_password_file),
        false,
    );
    let basic = match (&s.basic_user, basic_password) {
        (Some(u), Some(p)) if !u.trim().is_empty() => Some((u.trim().to_owned(), p)),
        (None, None) => None,
        _ => {
            c.error(
                &[key("scim"), key("basic_user")],
                "`scim.basic_user` and `scim.basic_password` go together",
            );
            None
        }
    };
    if bearer_token.is_none() && basic.is_none() && c.problems.is_empty() {
        c.error(
            &[key("scim"), key("enabled")],
            "`[scim]` is enabled without credentials: set `bearer_token` (or `bearer_token_file`) or `basic_user` + `basic_password`",
        );
    }
    if let Some(t) = &bearer_token
        && t.expose().len() < 16
    {
        c.error(
            &[key("scim"), key("bearer_token")],
            "`scim.bearer_token` is shorter than 16 characters: use a long random value",
        );
    }
    let store = match s.store.as_deref().unwrap_or("file:scim-data") {
        "memory" => ScimStorage::Memory,
        "redis" => {
            if f.session.store != "redis" {
                c.error(
                    &[key("scim"), key("store")],
                    "`scim.store = \"redis\"` uses the gateway's Redis, and none is configured: set `[session] store = \"redis\"` and `redis_url`, or use `store = \"file:DIR\"`",
                );
            }
            ScimStorage::Redis
        }
        raw => match raw.strip_prefix("file:") {
            Some(p) if !p.is_empty() => ScimStorage::File(PathBuf::from(p)),
            _ => {
                c.error(
                    &[key("scim"), key("store")],
                    format!("`scim.store`: \"{raw}\" is not \"file:DIR\", \"redis\" or \"memory\" (PostgreSQL is not supported yet)"),
                );
                ScimStorage::Memory
            }
        },
    };
    Some(ScimConfig {
        bearer_token,
        basic,
        store,
    })
}

pub(super) fn provisioning(c: &mut Checker<'_>, f: &FileConfig) -> ProvisioningConfig {
    let p = &f.provisioning;
    let mut out = ProvisioningConfig::default();
    let at = |k: &str| [key("provisioning"), key(k)];
    match p.deprovision.as_deref() {
        None | Some("restrict") => {}
        Some("delete") => out.deprovision = Deprovision::Delete,
        Some(other) => c.error(
            &at("deprovision"),
            format!("`provisioning.deprovision`: \"{other}\" is not \"restrict\" or \"delete\""),
        ),
    }
    if let Some(g) = &p.locked_customer_group {
        if g.trim().is_empty() {
            c.error(
                &at("locked_customer_group"),
                "`provisioning.locked_customer_group` is empty",
            );
        } else {
            out.locked_customer_group = g.trim().to_owned();
        }
    }
    if let Some(raw) = &p.reconcile_interval {
        out.reconcile_interval = c
            .duration(&at("reconcile_interval"), raw)
            .filter(|d| !d.is_zero());
    }
    if let Some(raw) = &p.queue {
        match raw.strip_prefix("file:") {
            Some(path) if !path.is_empty() => out.queue = QueueStorage::File(PathBuf::from(path)),
            _ if raw == "redis" => {
                if f.session.store != "redis" {
                    c.error(
                        &at("queue"),
                        "`provisioning.queue = \"redis\"` uses the gateway's Redis: set `[session] store = \"redis\"` and `redis_url`",
                    );
                }
                out.queue = QueueStorage::Redis;
            }
            _ => c.error(
                &at("queue"),
                format!("`provisioning.queue`: \"{raw}\" is not \"file:PATH\" or \"redis\""),
            ),
        }
    }
    if let Some(raw) = &p.queue_claim_after
        && let Some(d) = c.duration(&at("queue_claim_after"), raw)
    {
        if d < std::time::Duration::from_secs(1) {
            c.error(
                &at("queue_claim_after"),
                "`provisioning.queue_claim_after` is shorter than 1s: a working replica would lose its work to another",
            );
        } else {
            out.queue_claim_after = d;
        }
    }
    if let Some(idp) = &p.idp {
        if f.idps.iter().any(|i| &i.id == idp) {
            out.idp = Some(idp.clone());
        } else {
            c.error(
                &at("idp"),
                format!("`provisioning.idp`: no [[idp]] has the id \"{idp}\""),
            );
        }
    }
    out.repair_drift = p.repair_drift.unwrap_or(false);
    match p.subject_attribute.as_deref() {
        None | Some("externalId") => {}
        Some("userName") => out.subject_attribute = SubjectAttribute::UserName,
        Some(other) => c.error(
            &at("subject_attribute"),
            format!("`provisioning.subject_attribute`: \"{other}\" is not \"externalId\" or \"userName\""),
        ),
    }
    out
}
