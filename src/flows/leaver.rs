//! The leaver check, the same for sign-in and launch: a person SCIM says has left (deleted, or
//! `active: false`) is refused whatever the IdP, the session or the policy says. When the SCIM
//! store cannot answer, nobody passes (fail closed).

use crate::identity::Identity;
use crate::provisioning::scim::ScimService;

/// Why the check did not let the person through.
#[derive(Debug)]
pub enum NotCleared {
    /// SCIM deprovisioned this person.
    Leaver,
    /// The SCIM store could not say (its error, for the audit detail).
    Unknown { detail: String },
}

impl NotCleared {
    /// The audit reason.
    pub fn reason(&self) -> &'static str {
        match self {
            NotCleared::Leaver => "deprovisioned",
            NotCleared::Unknown { .. } => "scim_store_unavailable",
        }
    }
}

/// `Ok` when SCIM is off or the person is not a leaver.
pub async fn check(scim: Option<&ScimService>, identity: &Identity) -> Result<(), NotCleared> {
    let Some(scim) = scim else {
        return Ok(());
    };
    match scim
        .is_deprovisioned(&identity.subject, identity.email.as_deref())
        .await
    {
        Ok(false) => Ok(()),
        Ok(true) => Err(NotCleared::Leaver),
        Err(e) => Err(NotCleared::Unknown { detail: e.detail }),
    }
}
