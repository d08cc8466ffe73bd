//! Everything SAML needs at run time, built once at start-up: the IdPs, this SP's metadata, and
//! the one-time store (pending requests, replay cache, single-logout records).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::SamlProvider;
use super::settings::{SamlIdp, SamlSp};
use super::sp::{SpKeys, metadata_xml};
use crate::identity::IdpId;
use crate::session::one_time::OneTimeStore;

/// Everything SAML needs at run time, built once at start-up.
pub struct SamlState {
    pub providers: BTreeMap<String, Arc<SamlProvider>>,
    pub metadata: String,
    pub one_time: OneTimeStore,
    pub secure_cookie: bool,
}

impl SamlState {
    /// `sp` is `[saml]` (none: SAML is off); `idps` the SAML IdPs by id; `secure_cookie`: the
    /// binding cookies carry `Secure` (everything but `allow_insecure_http`).
    pub fn build<'a>(
        sp: Option<&SamlSp>,
        idps: impl IntoIterator<Item = (&'a IdpId, &'a SamlIdp)>,
        one_time: OneTimeStore,
        secure_cookie: bool,
    ) -> Result<Option<Self>, String> {
        let Some(spc) = sp else {
            return Ok(None);
        };
        let keys = Arc::new(SpKeys::from_pem(spc.key_pem.expose(), &spc.cert_pem)?);
        let mut providers = BTreeMap::new();
        for (id, s) in idps {
            let p = SamlProvider::new(id, s, spc, Arc::clone(&keys))?;
            if s.dangerous_allow_sha1 {
                tracing::warn!(idp = %id, "DANGER: dangerous_allow_sha1 is on: RSA-SHA1 signatures are accepted from this IdP");
            }
            if s.allow_unsolicited {
                tracing::warn!(idp = %id, "DANGER: allow_unsolicited is on: IdP-initiated responses are accepted");
            }
            let p = Arc::new(p);
            p.spawn_refresh();
            providers.insert(id.to_string(), p);
        }
        let metadata = metadata_xml(spc, &keys)?;
        Ok(Some(SamlState {
            providers,
            metadata,
            one_time,
            secure_cookie,
        }))
    }
}
