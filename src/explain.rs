//! `storegate explain`: every store with allow/deny, the rule and template that decided it and
//! what the grant carries, for an identity given as the claims an IdP would release. The same
//! engine and the same sentences as the gateway (the 403 page and audit events use
//! [`crate::policy::DenyReason::explain`] too), so the answer is the gateway's answer.
//!
//! Rendering is pure ([`render_text`], [`render_json`]) so the output is tested as snapshots
//! (`tests/data/explain/`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{Map, Value, json};

use crate::clock::rfc3339;
use crate::clock::{Clock, SystemClock, UnixTime};
use crate::config::{self, Config};
use crate::federation::VerifiedClaims;
use crate::federation::claims::map_identity;
use crate::identity::{AuthContext, Identity, IdpId, StoreId};
use crate::policy::{ControlPanelGrant, Decision, Grant, parse_expiry};
use crate::web::portal::expires_in;

/// What the command line asked for.
pub struct Request<'a> {
    pub config: &'a Path,
    pub claims: &'a Path,
    pub idp: Option<&'a str>,
    pub store: Option<&'a str>,
    /// RFC 3339 or Unix seconds; default now.
    pub at: Option<&'a str>,
    pub json: bool,
}

pub fn run(req: &Request<'_>) -> ExitCode {
    match explain(req) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// What the policy says for one identity: every (selected) store's decision, and the
/// control-panel grant per `[[bigcommerce]]` id (store hash).
pub struct Explained<'a> {
    pub decisions: &'a [(StoreId, Decision)],
    pub control_panel: &'a BTreeMap<String, ControlPanelGrant>,
}

/// The whole command, as text: the output, or the error to print.
pub fn explain(req: &Request<'_>) -> Result<String, String> {
    let cfg = config::load_file(req.config).map_err(|d| d.to_string())?;
    let claims: Map<String, Value> = std::fs::read_to_string(req.claims)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: cannot read the claims: {e}\n", req.claims.display()))?;
    let at = match req.at {
        None => SystemClock.now(),
        Some(raw) => parse_expiry(raw)
            .ok_or_else(|| format!("--at: \"{raw}\" is not an RFC 3339 time or Unix seconds\n"))?,
    };
    if let Some(s) = req.store
        && cfg.store(&StoreId::new(s)).is_none()
    {
        return Err(format!(
            "--store: there is no store \"{s}\" in the configuration\n"
        ));
    }
    let identity = identity_from_claims(&cfg, req.idp, claims, at)?;
    let decisions: Vec<(StoreId, Decision)> = cfg
        .policy
        .evaluate(&identity, at)
        .into_iter()
        .filter(|(id, _)| req.store.is_none_or(|s| id.as_str() == s))
        .collect();
    // With --store, the control panel of that store's hash only.
    let only_account = req
        .store
        .and_then(|s| cfg.policy.store_account(&StoreId::new(s)));
    let control_panel: BTreeMap<String, ControlPanelGrant> = cfg
        .policy
        .control_panel_grants(&identity, at)
        .into_iter()
        .filter(|(account, _)| only_account.is_none_or(|a| a == account.as_str()))
        .collect();
    let out = Explained {
        decisions: &decisions,
        control_panel: &control_panel,
    };
    Ok(if req.json {
        let mut s = serde_json::to_string_pretty(&render_json(&cfg, &identity, &out, at))
            .unwrap_or_default();
        s.push('\n');
        s
    } else {
        render_text(&cfg, &identity, &out, at)
    })
}

/// The identity the gateway would build from these claims, including the authentication context
/// (`acr`, `amr`, `auth_time`) a signed ID token would carry.
pub fn identity_from_claims(
    cfg: &Config,
    idp: Option<&str>,
    claims: Map<String, Value>,
    at: UnixTime,
) -> Result<Identity, String> {
    let idp_cfg = match idp {
        Some(id) => cfg.idp(id),
        None => cfg.idps.first(),
    }
    .ok_or_else(|| "no such IdP in the configuration\n".to_owned())?;
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or("(no sub)")
        .to_owned();
    let auth = AuthContext {
        auth_time: claims.get("auth_time").and_then(Value::as_i64),
        acr: claims.get("acr").and_then(Value::as_str).map(str::to_owned),
        amr: claims
            .get("amr")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        acr_implies: Vec::new(),
    };
    // explain evaluates claims an admin typed in; it never signs anyone in.
    let verified = VerifiedClaims::dangerous_unverified_for_tests(
        IdpId::new(idp_cfg.id.as_str()),
        subject,
        claims,
    );
    let mut identity = map_identity(&verified, &idp_cfg.claims, at);
    identity.auth = auth;
    Ok(identity)
}

/// What a grant carries, in one line (empty when it carries nothing beyond its role).
pub fn grant_details(g: &Grant, at: UnixTime) -> String {
    let mut parts = Vec::new();
    if let Some(cg) = &g.customer_group {
        parts.push(format!("customer group {cg}"));
    }
    if let Some(b) = &g.b2b {
        parts.push(format!("B2B company {} as {}", b.company_id, b.role));
    }
    if let Some(paths) = &g.allowed_paths {
        parts.push(format!("paths {}", paths.join(", ")));
    }
    if let Some(acr) = &g.require_acr {
        parts.push(format!("requires acr {acr}"));
    }
    if let Some(set) = &g.control_panel {
        parts.push(format!("control panel set \"{set}\""));
    }
    if let Some(max) = g.max_session_age {
        parts.push(format!(
            "launches within {} of sign-in",
            humantime::format_duration(std::time::Duration::from_secs(
                u64::try_from(max).unwrap_or(0)
            ))
        ));
    }
    if let Some(end) = g.expires_at {
        parts.push(format!(
            "expires {} ({})",
            rfc3339(end),
            expires_in(at, end)
        ));
    }
    parts.join("; ")
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join(", ")
    }
}

pub fn render_text(cfg: &Config, id: &Identity, out_of: &Explained<'_>, at: UnixTime) -> String {
    let decisions = out_of.decisions;
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}) via {} at {}",
        id.display_name(),
        id.subject,
        id.idp,
        rfc3339(at)
    );
    let _ = writeln!(out, "  groups: {}", list(&id.groups));
    let _ = writeln!(out, "  roles:  {}", list(&id.roles));
    let _ = writeln!(
        out,
        "  acr:    {}   amr: {}",
        id.auth.acr.as_deref().unwrap_or("-"),
        list(&id.auth.amr)
    );
    for (store, d) in decisions {
        let name = cfg.store(store).map(|s| s.name.as_str()).unwrap_or("?");
        match d {
            Decision::Allow { grant, overridden } => {
                let template = grant
                    .template
                    .as_ref()
                    .map(|t| format!(", template \"{t}\""))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "ALLOW {store} ({name}): role {} by rule \"{}\"{template}",
                    grant.role, grant.rule
                );
                let details = grant_details(grant, at);
                if !details.is_empty() {
                    let _ = writeln!(out, "      {details}");
                }
                if !overridden.is_empty() {
                    let _ = writeln!(
                        out,
                        "      also matched, overridden by file order: {}",
                        overridden.join(", ")
                    );
                }
            }
            Decision::Deny { reason } => {
                let _ = writeln!(out, "DENY  {store} ({name}): {}", reason.explain());
            }
        }
    }
    for (account, cp) in out_of.control_panel {
        let hash = cfg
            .account(account)
            .map(|a| a.store_hash.as_str())
            .unwrap_or("?");
        let rules: Vec<String> = cp.rules.iter().map(|r| format!("\"{r}\"")).collect();
        let _ = writeln!(
            out,
            "CONTROL PANEL {account} (store {hash}): set {} by rule {}",
            cp.sets.join(" + "),
            rules.join(", ")
        );
        let perms: Vec<&str> = cp.permissions.iter().map(String::as_str).collect();
        let _ = writeln!(out, "      permissions {}", perms.join(", "));
        if let Some(end) = cp.expires_at {
            let _ = writeln!(
                out,
                "      expires {} ({})",
                rfc3339(end),
                expires_in(at, end)
            );
        }
    }
    if out_of.control_panel.is_empty() && !cfg.policy.permission_sets().is_empty() {
        let _ = writeln!(out, "CONTROL PANEL: no grant");
    }
    out
}

pub fn render_json(cfg: &Config, id: &Identity, out_of: &Explained<'_>, at: UnixTime) -> Value {
    let stores: Vec<Value> = out_of
        .decisions
        .iter()
        .map(|(sid, d)| {
            let name = cfg.store(sid).map(|s| s.name.clone());
            let explanation = match d {
                Decision::Allow { grant, .. } => grant_details(grant, at),
                Decision::Deny { reason } => reason.explain(),
            };
            json!({"store": sid, "name": name, "result": d, "explanation": explanation})
        })
        .collect();
    json!({
        "at": rfc3339(at),
        "subject": id.subject,
        "idp": id.idp,
        "email": id.email,
        "groups": id.groups,
        "roles": id.roles,
        "acr": id.auth.acr,
        "amr": id.auth.amr,
        "stores": stores,
        "control_panel": out_of.control_panel,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn data(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/explain")
            .join(name)
    }

    /// Compares with the stored snapshot; `UPDATE_SNAPSHOTS=1` rewrites it instead.
    fn snapshot(name: &str, got: &str) {
        let path = data(name);
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, got).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "no snapshot {}; run with UPDATE_SNAPSHOTS=1",
                path.display()
            )
        });
        assert_eq!(
            got, want,
            "snapshot {name} differs (UPDATE_SNAPSHOTS=1 to accept)"
        );
    }

    fn run_explain(claims: &str, store: Option<&str>, at: &str, json: bool) -> String {
        run_explain_on("policy.toml", claims, store, at, json)
    }

    fn run_explain_on(
        config: &str,
        claims: &str,
        store: Option<&str>,
        at: &str,
        json: bool,
    ) -> String {
        let config = data(config);
        let claims = data(claims);
        explain(&Request {
            config: &config,
            claims: &claims,
            idp: None,
            store,
            at: Some(at),
            json,
        })
        .unwrap()
    }

    #[test]
    fn explain_an_agency_user_before_expiry_text() {
        snapshot(
            "agency.out.txt",
            &run_explain("agency.claims.json", None, "2027-01-12T08:00:00Z", false),
        );
    }

    #[test]
    fn explain_an_agency_user_after_expiry_text() {
        snapshot(
            "agency-expired.out.txt",
            &run_explain("agency.claims.json", None, "2027-01-15T08:00:00Z", false),
        );
    }

    #[test]
    fn explain_a_merchandiser_with_overlaps_and_a_deny_json() {
        snapshot(
            "merch.out.json",
            &run_explain("merch.claims.json", None, "1800000000", true),
        );
    }

    #[test]
    fn explain_one_store() {
        snapshot(
            "merch-nl.out.txt",
            &run_explain("merch.claims.json", Some("nl"), "1800000000", false),
        );
    }

    #[test]
    fn explain_shows_control_panel_grants_per_hash_beside_storefront_ones() {
        // A contractor: denied in `de`, so `main`'s set comes from `nl` and `us` only; the
        // `outlet` hash is granted through its own store.
        snapshot(
            "cp-merch.out.txt",
            &run_explain_on(
                "control-panel.toml",
                "merch.claims.json",
                None,
                "1800000000",
                false,
            ),
        );
        // Finance and merchandising through two channels of `main`: the union of both sets.
        snapshot(
            "cp-finance.out.json",
            &run_explain_on(
                "control-panel.toml",
                "finance.claims.json",
                None,
                "1800000000",
                true,
            ),
        );
        // --store: that store's hash only.
        snapshot(
            "cp-finance-outlet.out.txt",
            &run_explain_on(
                "control-panel.toml",
                "finance.claims.json",
                Some("outlet"),
                "1800000000",
                false,
            ),
        );
    }

    #[test]
    fn explain_refuses_an_unknown_store_and_a_bad_time() {
        let config = data("policy.toml");
        let claims = data("merch.claims.json");
        let req = |store, at| Request {
            config: &config,
            claims: &claims,
            idp: None,
            store,
            at,
            json: false,
        };
        assert_eq!(
            explain(&req(Some("nope"), None)).unwrap_err(),
            "--store: there is no store \"nope\" in the configuration\n"
        );
        assert!(
            explain(&req(None, Some("tuesday")))
                .unwrap_err()
                .contains("--at")
        );
    }
}
