//! Routes (`[[route]]`): the web tools behind the gateway's forward-auth endpoint and built-in
//! proxy, decided by the same conditions as a `[[rule]]`.
//!
//! # Precedence
//!
//! 1. The route is the one whose `host` equals the request's host (case-insensitively; a route
//!    host without a port matches any port) and whose `path_prefix` is the **longest** covering the
//!    request's path. No route covers the request: denied ([`RouteRefusal::NoRoute`]), deny by
//!    default.
//! 2. Its conditions (`groups_any`, `roles_any`, `email_domains`, `idps`, `attributes`,
//!    `attribute_regex`, `acr_any`, `amr_any`) must all hold, exactly as for an allow `[[rule]]`
//!    (an unverified email never satisfies `email_domains`). Otherwise: denied, naming the route.
//! 3. Its `require_acr`, when set, must be met by the session (same class, or one the IdP's order
//!    puts above it), else [`RouteRefusal::StepUpRequired`].
//!
//! A prefix ending in `/` covers everything below it; any other prefix covers itself and itself
//! followed by `/` or `?`. Paths with dot segments (also percent-encoded) never reach this module:
//! the forwarded-request parser refuses them, since the upstream would resolve them elsewhere.

use crate::clock::UnixTime;
use crate::identity::Identity;

use super::{Conditions, Effect, group_key};

/// One `[[route]]`, as the policy sees it (no upstream, no header names: those are the proxy's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub name: String,
    /// Lower-cased `host` or `host:port`.
    pub host: String,
    pub path_prefix: String,
    pub conditions: Conditions,
    pub require_acr: Option<String>,
}

impl RouteRule {
    /// Whether the route's host is `host` (a request's `Host`, maybe with a port).
    pub fn host_matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        if self.host.contains(':') && !self.host.ends_with(']') {
            return self.host == host;
        }
        strip_port(&host) == self.host
    }

    /// Whether the route's prefix covers `path` (a path with its query).
    pub fn covers(&self, path: &str) -> bool {
        let prefix = self.path_prefix.as_str();
        if prefix.ends_with('/') {
            return path.starts_with(prefix);
        }
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
    }
}

/// `host:port` -> `host`; `[::1]:80` -> `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Every route, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    routes: Vec<RouteRule>,
}

/// Why a request to a route is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteRefusal {
    /// No `[[route]]` covers this host and path.
    NoRoute,
    /// The route's conditions do not hold for this person.
    NotEntitled { route: String },
    /// The route needs a stronger authentication contract than this session's.
    StepUpRequired { route: String, acr: String },
}

impl RouteRefusal {
    /// The deciding route, or the default label.
    pub fn rule_label(&self) -> &str {
        match self {
            RouteRefusal::NoRoute => "default-deny",
            RouteRefusal::NotEntitled { route } | RouteRefusal::StepUpRequired { route, .. } => {
                route
            }
        }
    }

    /// A stable reason code for audit events.
    pub fn code(&self) -> &'static str {
        match self {
            RouteRefusal::NoRoute => "no_route",
            RouteRefusal::NotEntitled { .. } => "not_entitled",
            RouteRefusal::StepUpRequired { .. } => "step_up_required",
        }
    }

    pub fn explain(&self) -> String {
        match self {
            RouteRefusal::NoRoute => "no route covers this address (deny by default)".to_owned(),
            RouteRefusal::NotEntitled { route } => {
                format!("the route \"{route}\" does not admit you")
            }
            RouteRefusal::StepUpRequired { route, acr } => format!(
                "the route \"{route}\" requires the sign-in method {acr}, which this session did not use"
            ),
        }
    }
}

/// Proof that the policy admitted this identity to this route at this moment; only
/// [`RouteTable::authorize`] makes one, and only a grant can become an identity token.
#[derive(Debug)]
pub struct RouteGrant {
    route: String,
    /// The identity's groups the route's `groups_any` names (never the whole list).
    groups: Vec<String>,
    /// The identity's roles the route's `roles_any` names.
    roles: Vec<String>,
    decided_at: UnixTime,
}

impl RouteGrant {
    pub fn route(&self) -> &str {
        &self.route
    }
    pub fn groups(&self) -> &[String] {
        &self.groups
    }
    pub fn roles(&self) -> &[String] {
        &self.roles
    }
    pub fn decided_at(&self) -> UnixTime {
        self.decided_at
    }
}

impl RouteTable {
    pub fn new(routes: Vec<RouteRule>) -> Self {
        RouteTable { routes }
    }

    pub fn routes(&self) -> &[RouteRule] {
        &self.routes
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether some route's `require_acr` is `acr` (a step-up sign-in may ask the IdP for it).
    pub fn requires_acr(&self, acr: &str) -> bool {
        self.routes
            .iter()
            .any(|r| r.require_acr.as_deref() == Some(acr))
    }

    /// Whether some route serves `host` (any path): the hosts a return URL may name.
    pub fn serves_host(&self, host: &str) -> bool {
        self.routes.iter().any(|r| r.host_matches(host))
    }

    /// The route for `host` and `path`: the longest covering prefix on that host.
    pub fn find(&self, host: &str, path: &str) -> Option<&RouteRule> {
        self.routes
            .iter()
            .filter(|r| r.host_matches(host) && r.covers(path))
            .max_by_key(|r| r.path_prefix.len())
    }

    /// Decides one request. `path` is the request's path and query, already refused by the
    /// parser if it holds dot segments.
    pub fn authorize(
        &self,
        id: &Identity,
        host: &str,
        path: &str,
        now: UnixTime,
    ) -> Result<RouteGrant, RouteRefusal> {
        let route = self.find(host, path).ok_or(RouteRefusal::NoRoute)?;
        if !route.conditions.matches_as(Effect::Allow, id) {
            return Err(RouteRefusal::NotEntitled {
                route: route.name.clone(),
            });
        }
        if let Some(want) = &route.require_acr {
            let ok = id.auth.acr.as_ref() == Some(want) || id.auth.acr_implies.contains(want);
            if !ok {
                return Err(RouteRefusal::StepUpRequired {
                    route: route.name.clone(),
                    acr: want.clone(),
                });
            }
        }
        let wanted_groups: Vec<String> = route
            .conditions
            .groups_any
            .iter()
            .map(|g| group_key(g))
            .collect();
        let wanted_roles: Vec<String> = route
            .conditions
            .roles_any
            .iter()
            .map(|r| r.to_lowercase())
            .collect();
        Ok(RouteGrant {
            route: route.name.clone(),
            groups: id
                .groups
                .iter()
                .filter(|g| wanted_groups.contains(&group_key(g)))
                .cloned()
                .collect(),
            roles: id
                .roles
                .iter()
                .filter(|r| wanted_roles.contains(&r.to_lowercase()))
                .cloned()
                .collect(),
            decided_at: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdpId;

    fn person(groups: &[&str]) -> Identity {
        Identity {
            subject: "u1".into(),
            idp: IdpId::new("nam"),
            email: Some("lee@corp.example".into()),
            email_verified: true,
            given_name: None,
            family_name: None,
            name: Some("Lee".into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            roles: vec!["Desk".into()],
            attributes: Default::default(),
            auth: Default::default(),
            signed_in_at: 0,
        }
    }

    fn route(name: &str, host: &str, prefix: &str, groups: &[&str]) -> RouteRule {
        RouteRule {
            name: name.into(),
            host: host.into(),
            path_prefix: prefix.into(),
            conditions: Conditions {
                groups_any: groups.iter().map(|g| g.to_string()).collect(),
                ..Default::default()
            },
            require_acr: None,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route(
                "orders",
                "orders.example.com",
                "/",
                &["bc-finance", "bc-support"],
            ),
            route(
                "orders-admin",
                "orders.example.com",
                "/admin",
                &["bc-admins"],
            ),
            route("preview", "preview.example.com:8443", "/", &[]),
        ])
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table();
        assert_eq!(
            t.find("orders.example.com", "/admin/x").unwrap().name,
            "orders-admin"
        );
        assert_eq!(
            t.find("orders.example.com", "/admin?y=1").unwrap().name,
            "orders-admin"
        );
        assert_eq!(
            t.find("orders.example.com", "/administrator").unwrap().name,
            "orders"
        );
        assert_eq!(t.find("orders.example.com", "/").unwrap().name, "orders");
    }

    #[test]
    fn no_route_is_denied_by_default() {
        let t = table();
        let r = t.authorize(&person(&["bc-finance"]), "other.example.com", "/", 0);
        assert_eq!(r.unwrap_err(), RouteRefusal::NoRoute);
        assert_eq!(RouteRefusal::NoRoute.rule_label(), "default-deny");
    }

    #[test]
    fn host_compares_case_insensitively_and_port_only_when_the_route_names_one() {
        let t = table();
        assert!(t.find("ORDERS.example.com:443", "/").is_some());
        assert!(t.find("preview.example.com:8443", "/").is_some());
        assert!(t.find("preview.example.com", "/").is_none());
        assert!(t.find("preview.example.com:9443", "/").is_none());
    }

    #[test]
    fn conditions_decide_and_the_refusal_names_the_route() {
        let t = table();
        let err = t
            .authorize(&person(&["bc-finance"]), "orders.example.com", "/admin/", 0)
            .unwrap_err();
        assert_eq!(
            err,
            RouteRefusal::NotEntitled {
                route: "orders-admin".into()
            }
        );
        let ok = t
            .authorize(
                &person(&["BC-Finance", "hr-secret"]),
                "orders.example.com",
                "/x",
                7,
            )
            .unwrap();
        assert_eq!(ok.route(), "orders");
        // Only the groups the route names travel on, never the whole list.
        assert_eq!(ok.groups(), ["BC-Finance".to_owned()]);
        assert_eq!(ok.decided_at(), 7);
    }

    #[test]
    fn require_acr_refuses_a_weaker_session() {
        let mut r = route("strong", "s.example.com", "/", &[]);
        r.require_acr = Some("mfa".into());
        let t = RouteTable::new(vec![r]);
        let mut id = person(&[]);
        assert_eq!(
            t.authorize(&id, "s.example.com", "/", 0)
                .unwrap_err()
                .code(),
            "step_up_required"
        );
        id.auth.acr = Some("mfa".into());
        assert!(t.authorize(&id, "s.example.com", "/", 0).is_ok());
    }

    #[test]
    fn unverified_email_never_admits() {
        let mut r = route("by-domain", "d.example.com", "/", &[]);
        r.conditions.email_domains = vec!["corp.example".into()];
        let t = RouteTable::new(vec![r]);
        let mut id = person(&[]);
        assert!(t.authorize(&id, "d.example.com", "/", 0).is_ok());
        id.email_verified = false;
        assert!(t.authorize(&id, "d.example.com", "/", 0).is_err());
    }
}
