//! What a browser's server-side session holds once signed in, and the keys it is stored under.
//! Shared by the sign-in, launch and sign-out journeys (`flows`) and the web extractors, so none
//! of them reaches into another's module for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower_sessions::Session;
use tower_sessions::session::Id;

use crate::clock::UnixTime;
use crate::identity::{Identity, IdpId};
use crate::session::decoded::DecodedCache;

pub const AUTH_KEY: &str = "auth";
pub const PENDING_KEY: &str = "pending";
/// Logins a browser may have in flight at once (several tabs). Oldest dropped first, so state
/// never piles up (mod_auth_openidc's state cookies did).
pub const MAX_PENDING: usize = 5;
/// A login not completed within this many seconds is forgotten.
pub const PENDING_TTL: i64 = 600;
/// A launch that sent the browser back to the IdP (step-up, or a fresh sign-in for a grant with a
/// maximum session age), so that a second refusal shows a page instead of a redirect loop.
pub const STEP_UP_KEY: &str = "step_up";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepUpAttempt {
    /// The launch URL the sign-in returns to.
    pub return_to: String,
    pub at: UnixTime,
}

/// The signed-in state of one browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedInState {
    pub identity: Identity,
    /// Per-session token for state-changing forms (logout).
    pub csrf: String,
    pub last_seen: UnixTime,
    /// BigCommerce customer ids already ensured, keyed by account id and channel set, so a
    /// repeated launch makes no API call.
    #[serde(default)]
    pub customers: BTreeMap<String, u64>,
    /// Stores this session opened (store ids): sign-out ends their storefront sessions too.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub launched: BTreeSet<String>,
}

/// Signed-in states decoded lately, by session and the exact text they were decoded from: a
/// launch repeated on one session decodes its state once (see `session::decoded`). Held behind an
/// `Arc`, so a hit is a reference count, not a copy of the identity, its groups and attributes
/// (issue 15); a request that changes its state gets its own copy (`Arc::make_mut`), so what is
/// cached only ever says what the stored text says.
static SIGNED_IN: LazyLock<DecodedCache<Arc<SignedInState>>> = LazyLock::new(DecodedCache::default);

/// Reads the signed-in state from the session; `None` when there is none or it cannot be decoded
/// (a record written by an incompatible version means signed out, not an error page).
///
/// It is stored as one JSON string (see [`write_signed_in`]). Objects, as written before, are
/// still read, so sessions survive the upgrade.
pub async fn read_signed_in(
    session: &Session,
) -> Result<Option<Arc<SignedInState>>, tower_sessions::session::Error> {
    let Some(value) = session.get_value(AUTH_KEY).await? else {
        return Ok(None);
    };
    match decode_signed_in(session.id(), &value) {
        Ok(auth) => Ok(Some(auth)),
        Err(e) => {
            // Not serde's message: it may quote a value (the CSRF token, the identity).
            tracing::info!(
                category = ?e.classify(),
                column = e.column(),
                "a session's sign-in could not be read; treated as signed out"
            );
            Ok(None)
        }
    }
}

/// The signed-in state in a record's `auth` value: the JSON string [`write_signed_in`] stores
/// (through the decode cache when the session has an id), or an object an earlier version stored.
fn decode_signed_in(
    id: Option<Id>,
    value: &Value,
) -> Result<Arc<SignedInState>, serde_json::Error> {
    match (value, id) {
        (Value::String(s), Some(id)) => {
            SIGNED_IN.get_or_decode(id, s, |t| serde_json::from_str(t).map(Arc::new))
        }
        (Value::String(s), None) => serde_json::from_str(s).map(Arc::new),
        (other, _) => SignedInState::deserialize(other).map(Arc::new),
    }
}

/// What a signed-in request reads from its session record, decoded together: the sign-in and,
/// for a SAML sign-in, what an IdP-initiated logout is matched against (issue 15). The session
/// stores build it straight from the stored record ([`crate::session::Store::signed_in`]),
/// without the session layer's own copy of the record and of the value.
#[derive(Debug, Clone)]
pub struct SignedInRecord {
    pub auth: Arc<SignedInState>,
    pub saml: Option<Arc<SamlSessionInfo>>,
}

impl SignedInRecord {
    /// From a record's values; `None` unless there is a sign-in and everything decodes. The
    /// caller then reads through the session, which treats a missing, unreadable or
    /// earlier-format sign-in exactly as before.
    pub fn from_data(id: Id, data: &HashMap<String, Value>) -> Option<Self> {
        let auth = decode_signed_in(Some(id), data.get(AUTH_KEY)?).ok()?;
        let saml = match data.get(SAML_SESSION_KEY) {
            None => None,
            Some(v) => Some(Arc::new(SamlSessionInfo::deserialize(v).ok()?)),
        };
        Some(SignedInRecord { auth, saml })
    }
}

/// Stores the signed-in state as one JSON string rather than a JSON object: tower-sessions keeps
/// record values as `serde_json::Value` trees, which every load built (Redis) or copied (memory)
/// node by node and every read copied again before decoding; a string is copied whole and decoded
/// straight into the struct (~8% of a launch's CPU, perf, issue 6).
pub async fn write_signed_in(
    session: &Session,
    auth: &SignedInState,
) -> Result<(), tower_sessions::session::Error> {
    let encoded = serde_json::to_string(auth).map_err(tower_sessions::session::Error::SerdeJson)?;
    session
        .insert_value(AUTH_KEY, serde_json::Value::String(encoded))
        .await?;
    Ok(())
}

/// Session key for what SAML single logout needs (NameID, SessionIndex, IdP).
pub const SAML_SESSION_KEY: &str = "saml";

/// What single logout needs to name the IdP session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamlSessionInfo {
    pub idp: IdpId,
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub session_index: Option<String>,
}

/// Session key for what OIDC logout needs (RP-initiated and back-channel).
pub const OIDC_SESSION_KEY: &str = "oidc";

/// What OIDC logout needs to name the IdP session: the ID token for `id_token_hint` (OIDC
/// RP-Initiated Logout 1.0, section 2) and its `sid`.
#[derive(Clone, Serialize, Deserialize)]
pub struct OidcSessionInfo {
    pub idp: IdpId,
    pub id_token: String,
    pub sid: Option<String>,
}

impl std::fmt::Debug for OidcSessionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ID token vouches for the person to this client: never printed.
        f.debug_struct("OidcSessionInfo")
            .field("idp", &self.idp)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};
    use tower_sessions::Session;

    use super::*;
    use crate::identity::{AuthContext, IdpId};
    use crate::session::MemorySessionStore;

    fn session() -> Session {
        Session::new(None, Arc::new(MemorySessionStore::default()), None)
    }

    fn signed_in() -> SignedInState {
        SignedInState {
            identity: Identity {
                subject: "u-123".into(),
                idp: IdpId::new("opentext"),
                email: Some("ada@example.com".into()),
                email_verified: true,
                given_name: Some("Ada".into()),
                family_name: None,
                name: None,
                groups: vec!["staff".into()],
                roles: vec![],
                attributes: Default::default(),
                auth: AuthContext::default(),
                signed_in_at: 1_760_000_000,
            },
            csrf: "csrf-token".into(),
            last_seen: 1_760_000_060,
            customers: [("acct|[1]|".to_owned(), 42)].into_iter().collect(),
            launched: ["us".to_owned()].into_iter().collect(),
        }
    }

    #[tokio::test]
    async fn the_sign_in_is_stored_as_one_json_string_and_read_back_whole() {
        let session = session();
        write_signed_in(&session, &signed_in()).await.unwrap();
        let stored = session.get_value(AUTH_KEY).await.unwrap().unwrap();
        assert!(stored.is_string(), "stored as {stored}");
        let read = read_signed_in(&session).await.unwrap().unwrap();
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            serde_json::to_value(signed_in()).unwrap()
        );
    }

    #[tokio::test]
    async fn a_sign_in_stored_as_an_object_by_an_earlier_version_still_reads() {
        let session = session();
        let legacy = serde_json::to_value(signed_in()).unwrap();
        assert!(legacy.is_object());
        session.insert_value(AUTH_KEY, legacy).await.unwrap();
        let read = read_signed_in(&session).await.unwrap().unwrap();
        assert_eq!(read.identity.subject, "u-123");
        assert_eq!(read.customers.get("acct|[1]|"), Some(&42));
        assert_eq!(read.last_seen, 1_760_000_060);
    }

    #[tokio::test]
    async fn an_undecodable_sign_in_reads_as_signed_out_not_as_an_error() {
        for bad in [
            json!({"identity": "not an identity"}),
            Value::String("{\"identity\":".into()),
            Value::String("\"a string, not an object\"".into()),
            json!(17),
        ] {
            let session = session();
            session.insert_value(AUTH_KEY, bad.clone()).await.unwrap();
            assert!(
                read_signed_in(&session).await.unwrap().is_none(),
                "{bad} was not read as signed out"
            );
        }
    }

    #[tokio::test]
    async fn a_cached_sign_in_is_shared_copied_before_a_change_and_a_write_is_read_back() {
        let session = session();
        write_signed_in(&session, &signed_in()).await.unwrap();
        session.save().await.unwrap();
        assert!(session.id().is_some(), "the cache is per session id");
        let first = read_signed_in(&session).await.unwrap().unwrap();
        let mut mine = read_signed_in(&session).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &mine), "a repeated read is not shared");
        // A request's change is made on its own copy, never on what the cache holds.
        Arc::make_mut(&mut mine).launched.insert("eu".to_owned());
        let unchanged = read_signed_in(&session).await.unwrap().unwrap();
        assert!(!unchanged.launched.contains("eu"));
        // Written back, the next read sees the change (the stored text changed).
        write_signed_in(&session, &mine).await.unwrap();
        let after = read_signed_in(&session).await.unwrap().unwrap();
        assert!(after.launched.contains("eu"), "a stale sign-in was read");
        assert!(!Arc::ptr_eq(&after, &first));
    }

    #[tokio::test]
    async fn no_sign_in_reads_as_none() {
        assert!(read_signed_in(&session()).await.unwrap().is_none());
    }
}
