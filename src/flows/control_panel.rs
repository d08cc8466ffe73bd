//! Opening a store's control panel from the portal: `GET /control-panel/{account}`.
//!
//! Store hash -> leaver check -> the control-panel grant, decided again now (never taken from the
//! portal) -> audit -> the store's control-panel URL. No credential is minted: BigCommerce's own
//! login (or its control-panel SSO, where enabled) signs the person in, to the account the
//! reconciler created. The gate still matters: the entry is offered, and every open recorded,
//! only for people the policy grants the control panel now.

use super::Gateway;
use super::leaver::{self, NotCleared};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::identity::Identity;
use crate::policy::ControlPanelRefusal;

/// Where a store's control panel lives, for its store hash.
pub fn control_panel_url(store_hash: &str) -> String {
    format!("https://store-{store_hash}.mybigcommerce.com/manage")
}

/// The portal's link to the control panel of `[[bigcommerce]]` `account`.
pub fn entry_path(account: &str) -> String {
    format!("/control-panel/{}", crate::redirect::urlencode(account))
}

/// An open that went ahead: 302 to `url`.
#[derive(Debug)]
pub struct Opened {
    pub url: String,
}

/// Why the control panel was not opened. Every variant was audited by the flow.
#[derive(Debug)]
pub enum ControlPanelError {
    /// No `[[bigcommerce]]` with this id, or none of its stores is configured.
    UnknownAccount,
    /// The SCIM store could not say whether this person left (fail closed).
    LeaverUnknown,
    Leaver,
    /// The policy refuses; `store` names the account for the page.
    Refused {
        store: String,
        refusal: ControlPanelRefusal,
    },
}

impl ControlPanelError {
    /// The audit reason recorded for this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            ControlPanelError::UnknownAccount => "unknown_store",
            ControlPanelError::LeaverUnknown => "scim_store_unavailable",
            ControlPanelError::Leaver => "deprovisioned",
            ControlPanelError::Refused { refusal, .. } => refusal.code(),
        }
    }
}

/// Runs one open of `account`'s control panel for `identity`.
pub async fn open(
    gw: &Gateway<'_>,
    identity: &Identity,
    account: &str,
    request_id: &str,
) -> Result<Opened, ControlPanelError> {
    let now = gw.now();
    let event = |outcome: Outcome| {
        let mut ev =
            AuditEvent::new(now, request_id, EventKind::ControlPanelOpen, outcome).who(identity);
        ev.store = Some(account.to_owned());
        ev
    };

    // 1. The store hash.
    let snap = gw.policy();
    let Some(bc) = gw.config.account(account) else {
        let mut ev = event(Outcome::Deny);
        ev.rule = Some(ControlPanelRefusal::UnknownAccount.rule_label().to_owned());
        ev.reason = Some("unknown_store".into());
        gw.audit.record(ev);
        return Err(ControlPanelError::UnknownAccount);
    };

    // 2. A leaver is refused at once, as for a launch.
    if let Err(not_cleared) = leaver::check(gw.scim, identity).await {
        let mut ev = match &not_cleared {
            NotCleared::Leaver => event(Outcome::Deny).with_rule("deprovisioned"),
            NotCleared::Unknown { detail } => {
                let mut ev = event(Outcome::Error);
                ev.detail = Some(detail.clone());
                ev
            }
        };
        ev.reason = Some(not_cleared.reason().into());
        gw.audit.record(ev);
        return Err(match not_cleared {
            NotCleared::Leaver => ControlPanelError::Leaver,
            NotCleared::Unknown { .. } => ControlPanelError::LeaverUnknown,
        });
    }

    // 3. The grant, decided now from the snapshot the request started with.
    let grant = match snap.policy.authorize_control_panel(identity, account, now) {
        Ok(g) => g,
        Err(refusal) => {
            let mut ev = event(Outcome::Deny);
            ev.rule = Some(refusal.rule_label().to_owned());
            ev.reason = Some(refusal.code().to_owned());
            ev.detail = Some(refusal.explain());
            gw.audit.record(ev);
            if refusal == ControlPanelRefusal::UnknownAccount {
                return Err(ControlPanelError::UnknownAccount);
            }
            let store = snap
                .stores
                .iter()
                .find(|s| s.account == account)
                .map_or_else(|| account.to_owned(), |s| s.name.clone());
            return Err(ControlPanelError::Refused { store, refusal });
        }
    };

    let mut ev = event(Outcome::Allow);
    ev.rule = Some(grant.rules.join(","));
    ev.role = Some(grant.sets.join(","));
    ev.detail = Some(format!(
        "permission sets {}; store hash {}",
        grant.sets.join(", "),
        bc.store_hash
    ));
    gw.audit.record(ev);
    Ok(Opened {
        url: control_panel_url(&bc.store_hash),
    })
}
