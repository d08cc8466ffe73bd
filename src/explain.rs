//! `storegate explain`: every store with allow/deny and the rule that decided it, for an identity
//! given as the claims an IdP would release. The same engine as the gateway, so the answer is the
//! gateway's answer.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{Map, Value, json};

use crate::clock::{Clock, SystemClock};
use crate::config;
use crate::federation::VerifiedClaims;
use crate::federation::claims::map_identity;
use crate::identity::IdpId;
use crate::policy::Decision;

pub fn run(config_path: &Path, claims_path: &Path, idp: Option<&str>, as_json: bool) -> ExitCode {
    let cfg = match config::load_file(config_path) {
        Ok(c) => c,
        Err(d) => {
            eprint!("{d}");
            return ExitCode::FAILURE;
        }
    };
    let claims: Map<String, Value> = match std::fs::read_to_string(claims_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: cannot read the claims: {e}", claims_path.display());
            return ExitCode::FAILURE;
        }
    };
    let idp_cfg = match idp {
        Some(id) => cfg.idp(id),
        None => cfg.idps.first(),
    };
    let Some(idp_cfg) = idp_cfg else {
        eprintln!("no such IdP in the configuration");
        return ExitCode::FAILURE;
    };
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or("(no sub)")
        .to_owned();
    // explain evaluates claims an admin typed in; it never signs anyone in.
    let verified = VerifiedClaims::dangerous_unverified_for_tests(
        IdpId::new(idp_cfg.id.as_str()),
        subject,
        claims,
    );
    let now = SystemClock.now();
    let identity = map_identity(&verified, &idp_cfg.claims, now);
    let decisions = cfg.policy.evaluate(&identity, now);
    if as_json {
        let stores: Vec<Value> = decisions
            .iter()
            .map(|(id, d)| json!({"store": id, "result": d}))
            .collect();
        let out = json!({"subject": identity.subject, "email": identity.email, "groups": identity.groups, "stores": stores});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!(
            "{} ({}) groups: {}",
            identity.display_name(),
            identity.subject,
            identity.groups.join(", ")
        );
        for (id, d) in &decisions {
            match d {
                Decision::Allow { grant, overridden } => {
                    let extra = if overridden.is_empty() {
                        String::new()
                    } else {
                        format!(" (also matched: {})", overridden.join(", "))
                    };
                    println!(
                        "  ALLOW {id}: role {} by rule \"{}\"{extra}",
                        grant.role, grant.rule
                    );
                }
                Decision::Deny { reason } => println!("  DENY  {id}: {}", reason.explain()),
            }
        }
    }
    ExitCode::SUCCESS
}
