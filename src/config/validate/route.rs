//! Validation of `[[route]]` and `[forward_auth]`: every problem with its line.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use url::Url;

use super::super::diag::{Seg, key, render_path};
use super::super::file::FileConfig;
use super::super::route::{
    DEFAULT_IDENTITY_HEADER, ForwardAuthConfig, RouteFile, RouteLimits, RouteTarget,
};
use super::Checker;
use super::conditions::Owner;
use crate::forward::keys::{SigningKey, previous_from_pem};
use crate::policy::route::{RouteRule, RouteTable};
use crate::secret::Secret;

/// The longest identity-token lifetime accepted: the token is a bearer credential upstream.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Headers an identity token must never be put in (the upstream or proxy would misread it).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "cookie",
    "authorization",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
];

pub(super) fn forward_auth(
    c: &mut Checker<'_>,
    f: &FileConfig,
    idps: &[&str],
) -> ForwardAuthConfig {
    let fa = &f.forward_auth;
    let at = |k: &str| [key("forward_auth"), key(k)];
    let mut out = ForwardAuthConfig::default();
    if let Some(raw) = &fa.token_lifetime
        && let Some(d) = c.duration(&at("token_lifetime"), raw)
    {
        if d.is_zero() || d > MAX_TOKEN_LIFETIME {
            c.error(
                &at("token_lifetime"),
                "`forward_auth.token_lifetime` must be between 1s and 1h (a few minutes is usual)",
            );
        }
        out.token_lifetime = d;
    }
    if let Some(raw) = &fa.upstream_timeout
        && let Some(d) = c.duration(&at("upstream_timeout"), raw)
    {
        if d.is_zero() {
            c.error(
                &at("upstream_timeout"),
                "`forward_auth.upstream_timeout` must not be 0",
            );
        }
        out.upstream_timeout = d;
    }
    if let Some(raw) = &fa.max_body
        && let Some(n) = body_size(c, &at("max_body"), raw)
    {
        out.max_body = n;
    }
    if let Some(file) = &fa.signing_key_file {
        match c.env.read_file(Path::new(file)) {
            Ok(pem) => match SigningKey::from_pem(file, pem.as_bytes()) {
                Ok(_) => out.signing_key_pem = Some(Secret::new(pem)),
                Err(e) => c.error(
                    &at("signing_key_file"),
                    format!("`forward_auth.signing_key_file`: {e}"),
                ),
            },
            Err(e) => c.error(
                &at("signing_key_file"),
                format!("cannot read the signing key file {file}: {e}"),
            ),
        }
    }
    for (i, file) in fa.previous_key_files.iter().enumerate() {
        let path = [
            key("forward_auth"),
            key("previous_key_files"),
            Seg::Index(i),
        ];
        match c.env.read_file(Path::new(file)) {
            Ok(pem) => match previous_from_pem(file, pem.as_bytes()) {
                Ok(jwk) => out.previous_keys.push(jwk),
                Err(e) => c.error(&path, format!("`forward_auth.previous_key_files`: {e}")),
            },
            Err(e) => c.error(
                &path,
                format!("cannot read the previous key file {file}: {e}"),
            ),
        }
    }

    let mut names = HashSet::new();
    let mut places: HashSet<(String, String)> = HashSet::new();
    let mut rules = Vec::new();
    for (i, r) in f.routes.iter().enumerate() {
        if !names.insert(r.name.as_str()) {
            c.error(
                &[key("route"), Seg::Index(i), key("name")],
                format!("duplicate [[route]] name \"{}\"", r.name),
            );
        }
        let Some((rule, target)) = route(c, i, r, idps) else {
            continue;
        };
        let place = (
            rule.host.clone(),
            rule.path_prefix.trim_end_matches('/').to_owned(),
        );
        if !places.insert(place) {
            c.error(
                &[key("route"), Seg::Index(i), key("path_prefix")],
                format!(
                    "route \"{}\" overlaps an earlier route: same host \"{}\" and path_prefix \"{}\" (only one can decide)",
                    r.name, rule.host, rule.path_prefix
                ),
            );
        }
        if target.upstream.is_some()
            && let Some(path) = shadowed_gateway_path(&f.public_url, &rule)
        {
            c.error(
                &[key("route"), Seg::Index(i), key("path_prefix")],
                format!(
                    "route \"{}\" would proxy the gateway's own {path} on its host \"{}\": give it a prefix of its own (e.g. \"/tools/{}/\") or another host",
                    r.name, rule.host, r.name
                ),
            );
        }
        rules.push(rule);
        out.targets.push(target);
    }
    out.routes = RouteTable::new(rules);
    out
}

/// The gateway's own paths. A proxied route on the gateway's host must cover none of them, or
/// sign-in itself would be sent to the tool.
const GATEWAY_PATHS: &[&str] = &[
    "/",
    "/login",
    "/oidc/",
    "/saml/",
    "/logout",
    "/signed-out",
    "/stores/",
    "/api/",
    "/webhooks/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/auth/",
    "/.well-known/",
    "/static/",
    "/portal/",
    "/scim/",
    "/admin",
];

/// The first gateway path a proxied route on the gateway's own host would take over.
fn shadowed_gateway_path(public_url: &str, rule: &RouteRule) -> Option<&'static str> {
    let url = Url::parse(public_url).ok()?;
    let host = url.host_str()?;
    let gateway = match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    if !rule.host_matches(&gateway) {
        return None;
    }
    GATEWAY_PATHS.iter().copied().find(|g| {
        // The route takes the gateway path (or what is below it), or sits inside it.
        let base = g.trim_end_matches('/');
        rule.covers(g)
            || rule.covers(&format!("{g}x"))
            || (!base.is_empty()
                && (rule.path_prefix == base || rule.path_prefix.starts_with(&format!("{base}/"))))
    })
}

/// A body size like `"10MiB"` or `"1048576"`, above 0; reported on `path` otherwise.
fn body_size(c: &mut Checker<'_>, path: &[Seg], raw: &str) -> Option<usize> {
    match super::audit::parse_size(raw).and_then(|n| usize::try_from(n).ok()) {
        Some(n) if n > 0 => Some(n),
        _ => {
            c.error(
                path,
                format!(
                    "`{}`: {raw:?} is not a size like \"10MiB\" or \"1048576\"",
                    render_path(path)
                ),
            );
            None
        }
    }
}

/// A route's own `timeout` and `max_body`: sizes and durations above 0, and only on a route the
/// gateway proxies (a front door keeps its own limits; silently ignoring them would mislead).
fn route_limits(
    c: &mut Checker<'_>,
    i: usize,
    r: &RouteFile,
    proxied: bool,
) -> Option<RouteLimits> {
    let at = |k: &str| [key("route"), Seg::Index(i), key(k)];
    let mut ok = true;
    let mut limits = RouteLimits::default();
    for (k, set) in [
        ("timeout", r.timeout.is_some()),
        ("max_body", r.max_body.is_some()),
    ] {
        if set && !proxied {
            c.error(
                &at(k),
                format!(
                    "route \"{}\": `{k}` applies to the built-in proxy only; give the route an `upstream`, or set the limit in your front door",
                    r.name
                ),
            );
            ok = false;
        }
    }
    if let Some(raw) = &r.timeout {
        match c.duration(&at("timeout"), raw) {
            Some(d) if d.is_zero() => {
                c.error(
                    &at("timeout"),
                    format!("route \"{}\": `timeout` must not be 0", r.name),
                );
                ok = false;
            }
            Some(d) => limits.timeout = Some(d),
            None => ok = false,
        }
    }
    if let Some(raw) = &r.max_body {
        match body_size(c, &at("max_body"), raw) {
            Some(n) => limits.max_body = Some(n),
            None => ok = false,
        }
    }
    ok.then_some(limits)
}

fn route(
    c: &mut Checker<'_>,
    i: usize,
    r: &RouteFile,
    idps: &[&str],
) -> Option<(RouteRule, RouteTarget)> {
    let at = |k: &str| [key("route"), Seg::Index(i), key(k)];
    let mut ok = true;
    if r.name.trim().is_empty() || r.name.chars().any(|ch| ch.is_control()) {
        c.error(
            &at("name"),
            "a [[route]] needs a non-empty `name` (the identity token's audience)",
        );
        ok = false;
    }
    let host = r.host.trim().to_ascii_lowercase();
    let host_ok = !host.is_empty()
        && Url::parse(&format!("http://{host}/"))
            .ok()
            .is_some_and(|u| u.host_str().is_some() && u.path() == "/" && u.username().is_empty());
    if !host_ok || host.contains('/') || host.contains('@') {
        c.error(
            &at("host"),
            format!(
                "route \"{}\": host {:?} is not a host name like orders.example.com (or host:port)",
                r.name, r.host
            ),
        );
        ok = false;
    }
    let prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_owned());
    if !prefix.starts_with('/')
        || prefix.contains(['?', '#', '\\'])
        || prefix.split('/').any(|s| s == "." || s == "..")
    {
        c.error(
            &at("path_prefix"),
            format!("route \"{}\": path_prefix {prefix:?} must be a path starting with / (no query, no dot segments)", r.name),
        );
        ok = false;
    }
    let upstream = match &r.upstream {
        None => None,
        Some(raw) => match Url::parse(raw) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.path() == "/" =>
            {
                Some(u)
            }
            _ => {
                c.error(
                    &at("upstream"),
                    format!("route \"{}\": upstream {raw:?} must be an http(s) origin like \"http://127.0.0.1:9000\" (no path, query or credentials)", r.name),
                );
                ok = false;
                None
            }
        },
    };
    let header = r
        .identity_header
        .clone()
        .unwrap_or_else(|| DEFAULT_IDENTITY_HEADER.to_owned())
        .to_ascii_lowercase();
    if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err()
        || RESERVED_HEADERS.contains(&header.as_str())
    {
        c.error(
            &at("identity_header"),
            format!(
                "route \"{}\": identity_header {header:?} is not a usable header name",
                r.name
            ),
        );
        ok = false;
    }
    let limits = route_limits(c, i, r, upstream.is_some() || r.upstream.is_some());
    let conditions = super::conditions::validate_conditions(
        c,
        &[key("route"), Seg::Index(i)],
        Owner::Route(&r.name),
        &r.conditions,
        idps,
    );
    // A regex left out would widen the route: build no rule from it.
    if conditions.attribute_regex.len() < r.conditions.attribute_regex.len() {
        ok = false;
    }
    let limits = limits.filter(|_| ok)?;
    let rule = RouteRule {
        name: r.name.clone(),
        host,
        path_prefix: prefix,
        conditions,
        require_acr: r.require_acr.clone(),
    };
    let target = RouteTarget {
        name: r.name.clone(),
        upstream,
        identity_header: header,
        limits,
    };
    Some((rule, target))
}
