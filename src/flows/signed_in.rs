//! The browser's signed-in state, loaded with its lifetimes enforced (idle, absolute, and a
//! logout the IdP started on any replica). Every page that needs a sign-in and the forward-auth
//! decision load it here; what the session holds is `session::browser`.

use std::sync::Arc;

use tower_sessions::Session;

use super::Gateway;
use crate::session::browser::{SignedInState, read_signed_in, write_signed_in};

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
    let found = read_signed_in(session)
        .await
        .map_err(|_| SessionStoreFailed)?;
    let Some(mut auth) = found else {
        return Ok(Err(NoSignIn::Absent));
    };
    let now = gw.now();
    let s = &gw.config.session;
    let absolute_over = now - auth.identity.signed_in_at >= s.absolute_timeout.as_secs() as i64;
    let idle_over = now - auth.last_seen >= s.idle_timeout.as_secs() as i64;
    let ended_by_idp = super::sign_out::ended_by_idp(gw, session, auth.identity.signed_in_at)
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
