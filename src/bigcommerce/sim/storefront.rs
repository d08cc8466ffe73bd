//! Simulated storefronts at `/storefront/{hash}/{channel_id}`: the Customer Login endpoint
//! (`/login/token/{jwt}`), `/login.php`, and every other path as a page that tells who is signed in.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::state::{AcceptedLogin, RejectedLogin, Session};
use super::verify::{self, Attempt, Ledger};
use super::{SimHandle, SimStore};

pub const SESSION_COOKIE: &str = "SHOP_SESSION_TOKEN";

pub(super) fn router(sim: SimHandle) -> Router {
    Router::new()
        .route("/storefront/{hash}/{channel}", get(page))
        .route("/storefront/{hash}/{channel}/", get(page))
        .route("/storefront/{hash}/{channel}/{*path}", get(page))
        .with_state(sim)
}

impl Ledger for super::state::State {
    fn consume_jti(&mut self, jti: &str) -> bool {
        self.seen_jti.insert(jti.to_owned())
    }
    fn customer_channels(&self, store_hash: &str, customer_id: u64) -> Option<Option<Vec<u64>>> {
        self.stores
            .get(store_hash)?
            .customers
            .get(&customer_id)
            .map(|c| c.channel_ids.clone())
    }
}

fn redirect(location: &str) -> Response {
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location.to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (header::REFERRER_POLICY, "no-referrer".to_owned()),
        ],
    )
        .into_response()
}

async fn page(
    State(sim): State<SimHandle>,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
) -> Response {
    let hash = params.get("hash").cloned().unwrap_or_default();
    let channel_raw = params.get("channel").cloned().unwrap_or_default();
    let rest = params.get("path").cloned().unwrap_or_default();
    let store = sim.store(&hash).cloned();
    let channel = channel_raw.parse::<u64>().ok().and_then(|id| {
        store
            .as_ref()
            .and_then(|s| s.channels.iter().find(|c| c.id == id))
            .cloned()
    });
    let (Some(store), Some(channel)) = (store, channel) else {
        return (StatusCode::NOT_FOUND, Html("<h1>No such storefront</h1>")).into_response();
    };
    let prefix = format!("/storefront/{hash}/{}", channel.id);

    if let Some(jwt) = rest.strip_prefix("login/token/") {
        let client_ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let attempt = Attempt {
            token: jwt,
            store_hash: &hash,
            channel_id: channel.id,
            client_ip,
            store_now: sim.store_now(),
        };
        return login(&sim, &prefix, &attempt);
    }

    let sid = session_id(req.headers());
    let mut st = sim.0.state.lock();
    if rest == "login.php" {
        let logout = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "action=logout"));
        if logout {
            if let Some(sid) = &sid {
                st.sessions.remove(sid);
            }
            let cookie =
                format!("{SESSION_COOKIE}=; Path={prefix}; Max-Age=0; HttpOnly; SameSite=Lax");
            return (
                [
                    (header::SET_COOKIE, cookie),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
                Html(shell(&store, &channel.name, "<p>Signed out</p>")),
            )
                .into_response();
        }
        return Html(shell(
            &store,
            &channel.name,
            "<h1>Sign in</h1><p class=\"error\">Invalid login</p>",
        ))
        .into_response();
    }

    let who = sid
        .and_then(|sid| st.sessions.get(&sid))
        .filter(|s| s.store_hash == hash && s.channel_id == channel.id)
        .and_then(|s| st.stores.get(&hash)?.customers.get(&s.customer_id));
    let body = match who {
        Some(c) => format!(
            "<p>Signed in as {} {} ({})</p>",
            escape(&c.first_name),
            escape(&c.last_name),
            escape(&c.email)
        ),
        None => "<p>Not signed in</p>".to_owned(),
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(shell(&store, &channel.name, &body)),
    )
        .into_response()
}

fn login(sim: &SimHandle, prefix: &str, attempt: &Attempt<'_>) -> Response {
    let mut st = sim.0.state.lock();
    match verify::verify(attempt, &sim.0.config.stores, &mut *st) {
        Ok(v) => {
            let sid = uuid::Uuid::new_v4().to_string();
            st.sessions.insert(
                sid.clone(),
                Session {
                    store_hash: attempt.store_hash.to_owned(),
                    channel_id: attempt.channel_id,
                    customer_id: v.customer_id,
                },
            );
            st.accepted.push(AcceptedLogin {
                store_hash: attempt.store_hash.to_owned(),
                channel_id: attempt.channel_id,
                customer_id: v.customer_id,
                redirect_to: v.redirect_to.clone(),
            });
            let mut resp = redirect(&format!("{prefix}{}", v.redirect_to));
            let cookie = format!("{SESSION_COOKIE}={sid}; Path={prefix}; HttpOnly; SameSite=Lax");
            if let Ok(value) = cookie.parse() {
                resp.headers_mut().insert(header::SET_COOKIE, value);
            }
            resp
        }
        Err(reason) => {
            st.rejected.push(RejectedLogin {
                store_hash: attempt.store_hash.to_owned(),
                channel_id: attempt.channel_id,
                reason,
            });
            redirect(&format!("{prefix}/login.php"))
        }
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

fn shell(store: &SimStore, channel: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><title>{name}</title></head><body><header>{name} — {channel}</header>{body}</body></html>",
        name = escape(&store.name),
        channel = escape(channel),
    )
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}
