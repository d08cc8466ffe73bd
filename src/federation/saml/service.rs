//! Everything SAML needs at run time, built once at start-up: the IdPs, this SP's metadata, and
//! the one-time store (pending requests, replay cache, single-logout records).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::SamlProvider;
use super::sp::{SpKeys, metadata_xml};
use crate::config::Config;
use crate::session::one_time::OneTimeStore;

/// Everything SAML needs at run time, built once at start-up.
pub struct SamlState {
    pub providers: BTreeMap<String, Arc<SamlProvider>>,
    pub metadata: String,
    pub one_time: OneTimeStore,
    pub secure_cookie: bool,
}

impl SamlState {
    pub fn build(config: &Config, one_time: OneTimeStore) -> Result<Option<Self>, String> {
        let Some(spc) = &config.saml else {
            return Ok(None);
        };
        let keys = Arc::new(SpKeys::from_pem(spc.key_pem.expose(), &spc.cert_pem)?);
        let mut providers = BTreeMap::new();
        for idp in &config.idps {
            if let crate::config::Protocol::Saml(s) = &idp.protocol {
                let p = SamlProvider::new(idp, s, spc, Arc::clone(&keys))?;
                if s.dangerous_allow_sha1 {
                    tracing::warn!(idp = %idp.id, "DANGER: dangerous_allow_sha1 is on: RSA-SHA1 signatures are accepted from this IdP");
                }
                if s.allow_unsolicited {
                    tracing::warn!(idp = %idp.id, "DANGER: allow_unsolicited is on: IdP-initiated responses are accepted");
                }
                let p = Arc::new(p);
                p.spawn_refresh();
                providers.insert(idp.id.to_string(), p);
            }
        }
        let metadata = metadata_xml(spc, &keys)?;
        Ok(Some(SamlState {
            providers,
            metadata,
            one_time,
            secure_cookie: !config.allow_insecure_http,
        }))
    }
}
