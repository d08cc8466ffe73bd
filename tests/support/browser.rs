//! A "browser" for end-to-end tests: one cookie jar, no automatic redirects, every hop recorded.

use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::{HeaderValue, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{Client, Method, Response, StatusCode};
use std::sync::{Arc, Mutex};
use url::Url;

/// More hops than any sign-in needs; a redirect loop fails instead of spinning.
pub const MAX_HOPS: usize = 20;

/// One request the browser made and what came back.
#[derive(Clone, Debug)]
pub struct Hop {
    pub method: Method,
    pub url: Url,
    pub status: StatusCode,
    /// The `Location` header as sent (not resolved).
    pub location: Option<String>,
}

pub struct Browser {
    client: Client,
    jar: Arc<Jar>,
    hops: Mutex<Vec<Hop>>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Self::resolving(&[], std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A browser whose resolver sends each of `names` to `addr`, as DNS (or /etc/hosts) would:
    /// one gateway on 127.0.0.1 reached under several host names. Cookies follow the names.
    pub fn resolving(names: &[&str], addr: std::net::SocketAddr) -> Browser {
        let jar = Arc::new(Jar::default());
        let mut builder = Client::builder()
            .cookie_provider(Arc::clone(&jar))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30));
        for name in names {
            builder = builder.resolve(name, addr);
        }
        let client = builder.build().expect("build reqwest client");
        Browser {
            client,
            jar,
            hops: Mutex::new(Vec::new()),
        }
    }

    /// The underlying client (shares the cookie jar), for requests the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn get(&self, url: &str) -> Response {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        self.record(Method::GET, &resp);
        resp
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Response {
        let resp = self
            .client
            .post(url)
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        self.record(Method::POST, &resp);
        resp
    }

    /// POST a form the way a browser submits one from another site (e.g. a SAML IdP's auto-submit
    /// page): with `Origin: from_origin` and, as SameSite=Lax demands, without this browser's cookies.
    /// Cookies the answer sets are still stored.
    pub async fn post_form_cross_site(
        &self,
        url: &str,
        from_origin: &str,
        form: &[(&str, &str)],
    ) -> Response {
        self.post_form_cross_site_with(url, from_origin, form, None)
            .await
    }

    /// As [`Browser::post_form_cross_site`], sending only `cookie` (a `name=value` pair the caller
    /// knows to be `SameSite=None`, which browsers do send cross-site).
    pub async fn post_form_cross_site_with(
        &self,
        url: &str,
        from_origin: &str,
        form: &[(&str, &str)],
        cookie: Option<&str>,
    ) -> Response {
        let bare = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("build cookie-less reqwest client");
        let mut req = bare.post(url).header(ORIGIN, from_origin).form(form);
        if let Some(c) = cookie {
            req = req.header(reqwest::header::COOKIE, c);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("cross-site POST {url}: {e}"));
        let mut set = resp.headers().get_all(SET_COOKIE).iter();
        self.jar.set_cookies(&mut set, resp.url());
        self.record(Method::POST, &resp);
        resp
    }

    /// Follows `Location` until a response that is not a redirect (or panics after [`MAX_HOPS`]).
    pub async fn follow(&self, resp: Response) -> Response {
        self.follow_while(resp, |_| true).await
    }

    /// Follows `Location` while `go(next_url)` holds; returns the first response that is not a
    /// redirect, or the redirect whose target `go` refused (not requested). Useful to stop at a
    /// client's redirect URI, or before leaving for a store.
    pub async fn follow_while(&self, mut resp: Response, go: impl Fn(&Url) -> bool) -> Response {
        for _ in 0..MAX_HOPS {
            let Some(next) = location(&resp) else {
                return resp;
            };
            if !go(&next) {
                return resp;
            }
            resp = self.get(next.as_str()).await;
        }
        panic!(
            "more than {MAX_HOPS} redirects; hops:\n{}",
            self.hops_text()
        );
    }

    /// Walks node oidc-provider's development login and consent pages as `account` (any password).
    /// `resp` is a response that redirects (possibly via several hops) to the provider's
    /// `/interaction/{uid}` page. Returns the provider's redirect to the client's redirect URI, which
    /// carries `code`, `state` and `iss` (the redirect itself is not followed).
    pub async fn oidc_provider_login(&self, resp: Response, account: &str) -> Response {
        let op_origin = location(&resp)
            .map(|u| u.origin())
            .expect("oidc_provider_login wants a redirect towards the provider");
        let at_op = |u: &Url| u.origin() == op_origin;
        let mut resp = self.follow_while(resp, at_op).await;
        for _ in 0..4 {
            if location(&resp).is_some() {
                return resp; // left the provider: this is the redirect to the client
            }
            let page_url = resp.url().clone();
            let status = resp.status();
            let html = resp.text().await.expect("read interaction page");
            assert!(
                status == StatusCode::OK && page_url.path().starts_with("/interaction/"),
                "expected an oidc-provider interaction page, got {status} at {page_url}:\n{html}"
            );
            let action = form_action(&html, &page_url);
            let form: Vec<(&str, &str)> = match hidden_prompt(&html).as_deref() {
                Some("login") => vec![("prompt", "login"), ("login", account), ("password", "x")],
                Some("consent") => vec![("prompt", "consent")],
                other => panic!("unknown interaction prompt {other:?} at {page_url}:\n{html}"),
            };
            let posted = self.post_form(action.as_str(), &form).await;
            resp = self.follow_while(posted, at_op).await;
        }
        panic!(
            "oidc-provider interactions did not end; hops:\n{}",
            self.hops_text()
        );
    }

    /// Every request made so far, oldest first.
    pub fn hops(&self) -> Vec<Hop> {
        self.hops.lock().expect("hops lock").clone()
    }

    /// Hops as text, one per line, for assertion messages.
    pub fn hops_text(&self) -> String {
        self.hops()
            .iter()
            .map(|h| {
                let to = h.location.as_deref().unwrap_or("");
                format!("{} {} -> {} {to}\n", h.method, h.url, h.status.as_u16())
            })
            .collect()
    }

    /// The `Cookie` header this browser would send to `url`.
    pub fn cookies_for(&self, url: &str) -> Option<String> {
        let url = Url::parse(url).expect("cookies_for: valid URL");
        self.jar
            .cookies(&url)
            .and_then(|v: HeaderValue| v.to_str().ok().map(str::to_owned))
    }

    fn record(&self, method: Method, resp: &Response) {
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.hops.lock().expect("hops lock").push(Hop {
            method,
            url: resp.url().clone(),
            status: resp.status(),
            location,
        });
    }
}

/// The redirect target of `resp`, resolved against its URL; `None` when it is not a 3xx redirect.
pub fn location(resp: &Response) -> Option<Url> {
    if !resp.status().is_redirection() {
        return None;
    }
    let raw = resp.headers().get(LOCATION)?.to_str().ok()?;
    Some(
        resp.url()
            .join(raw)
            .unwrap_or_else(|e| panic!("bad Location {raw:?}: {e}")),
    )
}

/// The query parameter `name` of `url`, e.g. `code`, `state` or `iss` on a callback.
pub fn query_param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn form_action(html: &str, base: &Url) -> Url {
    let action = attr_after(html, "<form", "action")
        .unwrap_or_else(|| panic!("no <form action> in interaction page:\n{html}"));
    base.join(&action).expect("form action is a URL")
}

fn hidden_prompt(html: &str) -> Option<String> {
    let at = html.find("name=\"prompt\"")?;
    let tag_start = html[..at].rfind('<')?;
    attr_after(&html[tag_start..], "<input", "value")
}

/// The value of `attr` in the first `tag` element of `html` (double-quoted, HTML-unescaped `&amp;`).
fn attr_after(html: &str, tag: &str, attr: &str) -> Option<String> {
    let start = html.find(tag)?;
    let end = start + html[start..].find('>')?;
    let element = &html[start..end];
    let needle = format!("{attr}=\"");
    let value_start = element.find(&needle)? + needle.len();
    let value_len = element[value_start..].find('"')?;
    Some(element[value_start..value_start + value_len].replace("&amp;", "&"))
}
