//! Where the browser goes after signing in for a protected tool: an absolute URL, so it cannot be
//! a [`crate::redirect::LocalPath`]. "Parse, don't validate": a [`RouteReturn`] exists only for
//! an http(s) URL without credentials whose host a `[[route]]` serves, so the sign-in entry
//! (`/auth/continue?rd=`) can never become an open redirect.

use url::Url;

use crate::policy::route::RouteTable;

/// The longest return URL accepted.
pub const MAX_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteReturn(Url);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotARoute {
    #[error("the return address is not an absolute http(s) URL")]
    NotAUrl,
    #[error("the return address uses http, and the gateway requires https")]
    Insecure,
    #[error("the return address carries a user name or password")]
    Credentials,
    #[error("no configured route serves the return address's host")]
    UnknownHost,
}

impl RouteReturn {
    /// `allow_http`: the gateway's `allow_insecure_http` (development).
    pub fn parse(raw: &str, routes: &RouteTable, allow_http: bool) -> Result<Self, NotARoute> {
        if raw.len() > MAX_LEN || raw.chars().any(|c| c.is_control() || c == '\\' || c == ' ') {
            return Err(NotARoute::NotAUrl);
        }
        let mut url = Url::parse(raw).map_err(|_| NotARoute::NotAUrl)?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            "http" => return Err(NotARoute::Insecure),
            _ => return Err(NotARoute::NotAUrl),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(NotARoute::Credentials);
        }
        let host = url.host_str().ok_or(NotARoute::NotAUrl)?;
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        if !routes.serves_host(&host) {
            return Err(NotARoute::UnknownHost);
        }
        url.set_fragment(None);
        Ok(RouteReturn(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::route::RouteRule;

    fn routes() -> RouteTable {
        RouteTable::new(vec![RouteRule {
            name: "orders".into(),
            host: "orders.example.com".into(),
            path_prefix: "/".into(),
            conditions: Default::default(),
            require_acr: None,
        }])
    }

    #[test]
    fn a_route_host_is_accepted() {
        let r =
            RouteReturn::parse("https://orders.example.com/x?y=1#frag", &routes(), false).unwrap();
        assert_eq!(r.as_str(), "https://orders.example.com/x?y=1");
    }

    /// Open-redirect attempts (the forms that bit oauth2-proxy and mod_auth_mellon), each refused.
    #[test]
    fn open_redirects_are_refused() {
        let cases = [
            ("https://evil.example/", NotARoute::UnknownHost),
            (
                "https://orders.example.com.evil.example/",
                NotARoute::UnknownHost,
            ),
            (
                "https://orders.example.com@evil.example/",
                NotARoute::Credentials,
            ),
            (
                "https://user:pw@orders.example.com/",
                NotARoute::Credentials,
            ),
            ("//orders.example.com/", NotARoute::NotAUrl),
            ("/x", NotARoute::NotAUrl),
            (
                "javascript:alert(1)//orders.example.com",
                NotARoute::NotAUrl,
            ),
            (
                "https://orders.example.com\\@evil.example/",
                NotARoute::NotAUrl,
            ),
            (
                "https://orders.example.com\t.evil.example/",
                NotARoute::NotAUrl,
            ),
            ("http://orders.example.com/", NotARoute::Insecure),
            ("data:text/html,hi", NotARoute::NotAUrl),
        ];
        for (raw, want) in cases {
            assert_eq!(
                RouteReturn::parse(raw, &routes(), false),
                Err(want),
                "{raw}"
            );
        }
    }
}
