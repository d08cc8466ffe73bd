//! The browser's signed-in state, loaded with its lifetimes enforced (idle, absolute, and a
//! logout the IdP started on any replica). Every page that needs a sign-in and the forward-auth
//! decision load it here; what the session holds is `session::browser`.

use std::sync::Arc;

use tower_sessions::Session;

use super::Gateway;
use crate::session::browser::{
    SAML_SESSION_KEY, SamlSessionInfo, SignedInRecord, SignedInState, read_signed_in,
    write_signed_in,
};

/// `last_seen` is rewritten at most this often, so a launch does not always cost a session write.
const SEEN_GRANULARITY: i64 = 60;

/// Why there is no usable sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSignIn {
    Absent,
    Expired,
}

/// The session store could not be read or written: nothing can be said about the sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStoreFailed;

/// The signed-in state of `session`, or why there is none (an expired one is ended here). Shared
/// with the decode cache: change it with `Arc::make_mut`, which copies it first.
pub async fn load(
    gw: &Gateway<'_>,
    session: &Session,
) -> Result<Result<Arc<SignedInState>, NoSignIn>, SessionStoreFailed> {
    let Some(SignedInRecord { mut auth, saml }) = read(gw, session).await? else {
        return Ok(Err(NoSignIn::Absent));
    };
    let now = gw.now();
    let s = &gw.config.session;
    let absolute_over = now - auth.identity.signed_in_at >= s.absolute_timeout.as_secs() as i64;
    let idle_over = now - auth.last_seen >= s.idle_timeout.as_secs() as i64;
    let ended_by_idp =
        super::sign_out::ended_by_idp(gw, saml.as_deref(), auth.identity.signed_in_at)
            .await
            .map_err(|_| SessionStoreFailed)?;
    if absolute_over || idle_over || ended_by_idp {
        session.flush().await.map_err(|_| SessionStoreFailed)?;
        return Ok(Err(NoSignIn::Expired));
    }
    if now - auth.last_seen >= SEEN_GRANULARITY {
        Arc::make_mut(&mut auth).last_seen = now;
        write_signed_in(session, &auth)
            .await
            .map_err(|_| SessionStoreFailed)?;
    }
    Ok(Ok(auth))
}

/// The sign-in and its SAML logout details. Straight from the store when this request has not
/// changed its session yet (a launch, a portal page: one read of the record, no copy of it);
/// otherwise, and whenever the store finds no readable sign-in, through the session, which sees
/// this request's own changes and ends a session whose record is gone.
async fn read(
    gw: &Gateway<'_>,
    session: &Session,
) -> Result<Option<SignedInRecord>, SessionStoreFailed> {
    if let Some(id) = stored_id(session)
        && let Some(found) = gw
            .sessions
            .signed_in(&id)
            .await
            .map_err(|_| SessionStoreFailed)?
    {
        return Ok(Some(found));
    }
    let Some(auth) = read_signed_in(session)
        .await
        .map_err(|_| SessionStoreFailed)?
    else {
        return Ok(None);
    };
    // Only a gateway that takes SAML sign-ins ever checks a session against an IdP's logout.
    let saml = match gw.saml {
        Some(_) => session
            .get::<SamlSessionInfo>(SAML_SESSION_KEY)
            .await
            .map_err(|_| SessionStoreFailed)?
            .map(Arc::new),
        None => None,
    };
    Ok(Some(SignedInRecord { auth, saml }))
}

/// The id to read the sign-in under straight from the store: none once this request has changed
/// its session, as the store does not hold that change yet.
fn stored_id(session: &Session) -> Option<tower_sessions::session::Id> {
    session.id().filter(|_| !session.is_modified())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tower_sessions::session::{Id, Record};
    use tower_sessions::{Session, SessionStore};

    use super::stored_id;
    use crate::session::MemorySessionStore;

    #[tokio::test]
    async fn a_session_this_request_changed_is_not_read_from_the_store() {
        let store = Arc::new(MemorySessionStore::default());
        let mut record = Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        store.create(&mut record).await.expect("create");
        let session = Session::new(Some(record.id), store, None);
        assert_eq!(stored_id(&session), Some(record.id));
        // Read but not changed: the store still says what the session holds.
        assert!(session.get_value("x").await.expect("read").is_none());
        assert_eq!(stored_id(&session), Some(record.id));
        session.insert("step_up", 1).await.expect("insert");
        assert_eq!(session.id(), Some(record.id));
        assert_eq!(stored_id(&session), None);
        let no_cookie = Session::new(None, Arc::new(MemorySessionStore::default()), None);
        assert_eq!(stored_id(&no_cookie), None);
    }
}
