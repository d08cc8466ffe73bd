//! Return paths, parsed once ("parse, don't validate").
//!
//! `return_to` (after sign-in) and `to` (the storefront path after launch) come from the browser. A
//! [`LocalPath`] can only be built from a string that is a plain absolute path on the same origin, so
//! every open-redirect form that has bitten peers (oauth2-proxy CVE-2020-5233, mod_auth_mellon
//! CVE-2019-3877/13038) is refused at the edge and the rest of the code cannot forget the check.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalPath(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotLocal {
    #[error("the path is empty")]
    Empty,
    #[error("the path must start with a single '/'")]
    NotAbsolutePath,
    #[error("the path must not start with '//' or '/\\' (another host)")]
    OtherHost,
    #[error("the path contains a control character or backslash")]
    ForbiddenCharacter,
    #[error("the path is too long")]
    TooLong,
}

const MAX_LEN: usize = 2048;

impl LocalPath {
    pub fn parse(raw: &str) -> Result<Self, NotLocal> {
        if raw.is_empty() {
            return Err(NotLocal::Empty);
        }
        if raw.len() > MAX_LEN {
            return Err(NotLocal::TooLong);
        }
        // Browsers treat '\' like '/', and strip tabs and newlines inside URLs: refuse them all
        // rather than guess what a browser will make of them.
        if raw.chars().any(|c| c.is_control() || c == '\\') {
            return Err(NotLocal::ForbiddenCharacter);
        }
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(NotLocal::NotAbsolutePath);
        };
        if rest.starts_with('/') {
            return Err(NotLocal::OtherHost);
        }
        // Percent-encoded slashes or backslashes at the start decode to the same tricks.
        let lower = rest.to_ascii_lowercase();
        if lower.starts_with("%2f") || lower.starts_with("%5c") {
            return Err(NotLocal::OtherHost);
        }
        // Dot segments (`/a/..//evil`, also `%2e%2e`, which browsers decode) can remove the first
        // segment and leave `//evil` for whatever normalises the path before redirecting (a
        // scheme-relative URL). Resolved as a browser would (WHATWG, the `url` crate).
        if !stays_local(raw) {
            return Err(NotLocal::OtherHost);
        }
        Ok(LocalPath(raw.to_owned()))
    }

    pub fn root() -> Self {
        LocalPath("/".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `path`, resolved against a base, stays on the base's host with a path that does not
/// start with `//`.
fn stays_local(path: &str) -> bool {
    const BASE: &str = "https://gateway.invalid/";
    url::Url::parse(BASE)
        .and_then(|b| b.join(path))
        .is_ok_and(|u| u.host_str() == Some("gateway.invalid") && !u.path().starts_with("//"))
}

impl fmt::Display for LocalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `s` encoded for a query string value (`application/x-www-form-urlencoded`).
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_local_paths() {
        for ok in [
            "/",
            "/account.php",
            "/cart.php?x=1&y=%2F",
            "/a/b/c#frag",
            "/login.php?action=logout",
            "/a/../b",
            "/@evil.example",
            "/a//b",
        ] {
            assert_eq!(LocalPath::parse(ok).map(|p| p.0), Ok(ok.to_owned()), "{ok}");
        }
    }

    #[test]
    fn refuses_every_open_redirect_form() {
        let cases = [
            ("", NotLocal::Empty),
            ("//evil.example", NotLocal::OtherHost),
            ("///evil.example", NotLocal::OtherHost),
            ("/\\evil.example", NotLocal::ForbiddenCharacter),
            ("\\\\evil.example", NotLocal::ForbiddenCharacter),
            ("https://evil.example", NotLocal::NotAbsolutePath),
            ("javascript:alert(1)", NotLocal::NotAbsolutePath),
            ("evil.example", NotLocal::NotAbsolutePath),
            ("/%2F%2Fevil.example", NotLocal::OtherHost),
            ("/%5cevil.example", NotLocal::OtherHost),
            ("/ok\r\nSet-Cookie: x=y", NotLocal::ForbiddenCharacter),
            ("/\t/evil.example", NotLocal::ForbiddenCharacter),
            // Seeds of tests/fuzz/corpus/return_to, found by its oracle: normalised, these are
            // `//evil.example`.
            ("/portal/..//evil.example", NotLocal::OtherHost),
            ("/a/%2e%2e//evil.example", NotLocal::OtherHost),
            ("/a/%2E./..//evil.example", NotLocal::OtherHost),
        ];
        for (raw, want) in cases {
            assert_eq!(LocalPath::parse(raw), Err(want), "{raw:?}");
        }
        assert_eq!(
            LocalPath::parse(&format!("/{}", "a".repeat(MAX_LEN))),
            Err(NotLocal::TooLong)
        );
    }
}
