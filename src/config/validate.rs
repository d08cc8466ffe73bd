//! File shape -> validated [`Config`], collecting every problem with its line.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

mod account;
mod admin;
mod audit;
mod conditions;
mod permission_set;
mod portal;
mod provisioning;
mod redis_topology;
mod route;
mod telemetry;

use conditions::Owner;

use super::diag::{Diagnostic, LineIndex, Seg, key, render_path};
use super::file::{
    B2bFile, BigCommerceFile, ClaimsFile, FileConfig, IdpFile, RuleFile, StoreFile, TemplateFile,
};
use super::{
    AuthnContextRule, BigCommerceAccount, ClaimMapping, Config, Environment, IdpConfig, OidcIdp,
    Protocol, SamlIdp, SamlSp, SessionBackend, SessionConfig, Store, TokenAuthMethod,
};
use crate::identity::{IdpId, StoreId};
use crate::policy::{
    B2bGrant, B2bRole, CustomerGroupRef, Effect, GrantSpec, Location, Policy, Rule, StoreEntry,
    StoreSelector, Template,
};
use crate::redirect::LocalPath;
use crate::secret::Secret;

struct Checker<'a> {
    lines: LineIndex<'a>,
    env: &'a dyn Environment,
    problems: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, path: &[Seg], message: impl Into<String>) {
        let line = self.lines.line_of(path);
        self.problems.push(Diagnostic {
            line,
            message: message.into(),
        });
    }

    /// Replaces `${NAME}` references with the environment's values.
    fn interpolate(&mut self, path: &[Seg], raw: &str) -> Option<String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        let mut ok = true;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                self.error(
                    path,
                    format!("`{}`: unterminated `${{` reference", render_path(path)),
                );
                return None;
            };
            let name = &after[..end];
            match self.env.var(name) {
                Some(v) => out.push_str(&v),
                None => {
                    self.error(
                        path,
                        format!(
                            "`{}` refers to the environment variable {name}, which is not set",
                            render_path(path)
                        ),
                    );
                    ok = false;
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        ok.then_some(out)
    }

    /// A secret given inline or as `${ENV}` (`value`), or as a path to a file (`file`).
    fn secret(
        &mut self,
        table: &[Seg],
        name: &str,
        value: &Option<String>,
        file: Option<&Option<String>>,
        required: bool,
    ) -> Option<Secret> {
        let value_path = [table, &[key(name)]].concat();
        let file_key = format!("{name}_file");
        let file_path = [table, &[key(&file_key)]].concat();
        match (value, file.and_then(|f| f.as_ref())) {
            (Some(_), Some(_)) => {
                self.error(
                    &file_path,
                    format!("set either `{name}` or `{file_key}`, not both"),
                );
                None
            }
            (Some(v), None) => {
                let resolved = self.interpolate(&value_path, v)?;
                if resolved.trim().is_empty() {
                    self.error(
                        &value_path,
                        format!("`{}` is empty", render_path(&value_path)),
                    );
                    return None;
                }
                Some(Secret::new(resolved))
            }
            (None, Some(f)) => {
                let p = self.interpolate(&file_path, f)?;
                match self.env.read_file(Path::new(&p)) {
                    Ok(s) if !s.trim().is_empty() => Some(Secret::new(s.trim().to_owned())),
                    Ok(_) => {
                        self.error(&file_path, format!("the secret file {p} is empty"));
                        None
                    }
                    Err(e) => {
                        self.error(&file_path, format!("cannot read the secret file {p}: {e}"));
                        None
                    }
                }
            }
            (None, None) => {
                if required {
                    let hint = if file.is_some() {
                        format!("`{name}` (or `{file_key}`)")
                    } else {
                        format!("`{name}`")
                    };
                    self.error(table, format!("`{}` needs {hint}", render_path(table)));
                }
                None
            }
        }
    }

    fn duration(&mut self, path: &[Seg], raw: &str) -> Option<Duration> {
        match humantime::parse_duration(raw) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    path,
                    format!(
                        "`{}`: \"{raw}\" is not a duration like \"30m\" or \"12h\" ({e})",
                        render_path(path)
                    ),
                );
                None
            }
        }
    }

    fn url(&mut self, path: &[Seg], raw: &str) -> Option<Url> {
        match Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                self.error(
                    path,
                    format!(
                        "`{}`: \"{raw}\" must be an http(s) URL with a host",
                        render_path(path)
                    ),
                );
                None
            }
            Err(e) => {
                self.error(
                    path,
                    format!("`{}`: \"{raw}\" is not a URL ({e})", render_path(path)),
                );
                None
            }
        }
    }

    fn time(&mut self, path: &[Seg], raw: &Option<String>) -> Option<i64> {
        let raw = raw.as_ref()?;
        match time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339) {
            Ok(t) => Some(t.unix_timestamp()),
            Err(e) => {
                self.error(
                    path,
                    format!(
                        "`{}`: \"{raw}\" is not an RFC 3339 time like 2026-12-01T00:00:00Z ({e})",
                        render_path(path)
                    ),
                );
                None
            }
        }
    }

    fn duplicate_ids<'x>(&mut self, table: &str, ids: impl Iterator<Item = &'x str>) {
        let mut seen = HashSet::new();
        for (i, id) in ids.enumerate() {
            if !seen.insert(id) {
                self.error(
                    &[key(table), Seg::Index(i), key("id")],
                    format!("duplicate [[{table}]] id \"{id}\""),
                );
            }
        }
    }
}

fn seg_path(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    use serde_ignored::Path as P;
    match path {
        P::Root => {}
        P::Seq { parent, index } => {
            seg_path(parent, out);
            out.push(Seg::Index(*index));
        }
        P::Map { parent, key } => {
            seg_path(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            seg_path(parent, out)
        }
    }
}

pub(super) fn load(text: &str, env: &dyn Environment) -> Result<Config, Vec<Diagnostic>> {
    let mut c = Checker {
        lines: LineIndex::new(text),
        env,
        problems: Vec::new(),
    };

    let mut unknown: Vec<Vec<Seg>> = Vec::new();
    let parsed: Result<FileConfig, toml::de::Error> = toml::Deserializer::new(text).pipe(|de| {
        serde_ignored::deserialize(de, |p| {
            let mut segs = Vec::new();
            seg_path(&p, &mut segs);
            unknown.push(segs);
        })
    });
    let report_unknown = |c: &mut Checker<'_>, paths: &[Vec<Seg>]| {
        for path in paths {
            c.error(path, format!("unknown key `{}`", render_path(path)));
        }
    };
    report_unknown(&mut c, &unknown);
    let file = match parsed {
        Ok(f) => f,
        Err(e) => {
            let line = e
                .span()
                .map(|s| c.lines.line_of_offset(s.start))
                .unwrap_or(1);
            c.problems.push(Diagnostic {
                line,
                message: e.message().trim().to_owned(),
            });
            // Unknown keys met before the error are not necessarily in file order (a later
            // `[idp.claims]` belongs to an earlier table), so sort here too.
            c.problems.sort_by_key(|d| d.line);
            return Err(c.problems);
        }
    };

    report_unknown(&mut c, &conditions::unknown_keys(&file));
    let config = build(&mut c, file);
    if c.problems.is_empty() {
        config.ok_or_else(Vec::new)
    } else {
        c.problems.sort_by_key(|d| d.line);
        Err(c.problems)
    }
}

trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl<T> Pipe for T {}

fn build(c: &mut Checker<'_>, f: FileConfig) -> Option<Config> {
    let public_url = c.url(&[key("public_url")], &f.public_url);
    if let Some(u) = &public_url {
        if u.scheme() == "http" && !f.allow_insecure_http {
            c.error(
                &[key("public_url")],
                "`public_url` is http: session cookies would travel in clear text. Use https, or set `allow_insecure_http = true` for development only",
            );
        }
        if u.path() != "/" {
            c.error(
                &[key("public_url")],
                "`public_url` must be an origin without a path (storegate serves its routes at the root); give it its own host name",
            );
        }
        if u.query().is_some() || u.fragment().is_some() {
            c.error(
                &[key("public_url")],
                "`public_url` must not have a query or fragment",
            );
        }
    }
    let listen = match f.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            c.error(
                &[key("listen")],
                format!(
                    "`listen`: \"{}\" is not an address like 127.0.0.1:8080",
                    f.listen
                ),
            );
            None
        }
    };

    let session = session(c, &f);
    let (audit, audit_trail) = audit::audit(c, &f);
    let audit_postgres = audit::postgres(c, &f, &audit, audit_trail.chain);

    c.duplicate_ids("idp", f.idps.iter().map(|i| i.id.as_str()));
    c.duplicate_ids("bigcommerce", f.bigcommerce.iter().map(|b| b.id.as_str()));
    c.duplicate_ids("store", f.stores.iter().map(|s| s.id.as_str()));
    let mut rule_names = HashSet::new();
    for (i, r) in f.rules.iter().enumerate() {
        if !rule_names.insert(r.name.as_str()) {
            c.error(
                &[key("rule"), Seg::Index(i), key("name")],
                format!("duplicate [[rule]] name \"{}\"", r.name),
            );
        }
    }

    let mut template_names = HashSet::new();
    for (i, t) in f.templates.iter().enumerate() {
        if !template_names.insert(t.name.as_str()) {
            c.error(
                &[key("template"), Seg::Index(i), key("name")],
                format!("duplicate [[template]] name \"{}\"", t.name),
            );
        }
    }

    if f.idps.is_empty() {
        c.error(
            &[],
            "no [[idp]] is configured: users would have nowhere to sign in",
        );
    }
    let saml = public_url.as_ref().and_then(|u| saml_sp(c, &f, u));
    let idps: Vec<IdpConfig> = f
        .idps
        .iter()
        .enumerate()
        .filter_map(|(i, idp)| {
            if idp.protocol == "saml" {
                saml_idp_config(c, i, idp, f.saml.is_some(), f.allow_insecure_http)
            } else {
                idp_config(c, i, idp)
            }
        })
        .collect();
    let accounts: Vec<BigCommerceAccount> = f
        .bigcommerce
        .iter()
        .enumerate()
        .filter_map(|(i, b)| account(c, i, b))
        .collect();
    let stores: Vec<Store> = f
        .stores
        .iter()
        .enumerate()
        .filter_map(|(i, s)| store(c, i, s, &f))
        .collect();
    let templates: Vec<Template> = f
        .templates
        .iter()
        .enumerate()
        .map(|(i, t)| template(c, i, t))
        .collect();
    let idp_ids: Vec<&str> = f.idps.iter().map(|i| i.id.as_str()).collect();
    let store_ids: Vec<&str> = f.stores.iter().map(|s| s.id.as_str()).collect();
    let rules: Vec<Rule> = f
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| rule(c, i, r, &store_ids, &idp_ids, &f.templates))
        .collect();
    let permission_sets = permission_set::permission_sets(c, &f);
    permission_set::grant_keys(c, &f, &permission_sets);

    let policy = Policy::new(
        stores
            .iter()
            .map(|s| StoreEntry {
                id: s.id.clone(),
                tags: s.tags.clone(),
                template: s.template.clone(),
            })
            .collect(),
        templates,
        rules,
    )
    .with_control_panel(permission_set::setup(permission_sets, &stores));
    b2b_needs_access(c, &policy, &stores, &accounts);
    let warnings = if c.problems.is_empty() {
        warnings(c, &policy, &f)
    } else {
        Vec::new()
    };
    let mut trusted_proxies = Vec::new();
    for (i, raw) in f.trusted_proxies.iter().enumerate() {
        // A bare address is a /32 (or /128).
        let parsed = raw
            .parse::<ipnet::IpNet>()
            .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => c.error(
                &[key("trusted_proxies"), Seg::Index(i)],
                format!("`trusted_proxies`: \"{raw}\" is not an address or CIDR like 10.0.0.0/8"),
            ),
        }
    }
    let scim = provisioning::scim(c, &f);
    let provisioning = provisioning::provisioning(c, &f);
    let telemetry = telemetry::telemetry(c, &f);
    let forward_auth = route::forward_auth(c, &f, &idp_ids);
    let rate_limit = super::rate_limit::validate(&f.rate_limit).unwrap_or_else(|e| {
        c.error(&[key("rate_limit"), key("per_address_burst")], e);
        Default::default()
    });
    let admin = admin::admin(c, &f, &idp_ids);
    let control_panel_accounts = account::accounts(c, &f);
    Some(Config {
        public_url: public_url?,
        listen: listen?,
        allow_insecure_http: f.allow_insecure_http,
        support_contact: f
            .support_contact
            .unwrap_or_else(|| "your IT service desk".into()),
        trusted_proxies,
        session: session?,
        audit,
        audit_trail,
        audit_postgres,
        saml,
        idps,
        bigcommerce: accounts,
        stores,
        accounts: control_panel_accounts,
        policy,
        scim,
        provisioning,
        telemetry,
        rate_limit,
        admin,

        forward_auth,
        warnings,
    })
}

/// A grant that gives a B2B Edition role can only be applied on stores whose account has B2B
/// Edition access: checked for every store each allow rule reaches.
fn b2b_needs_access(
    c: &mut Checker<'_>,
    policy: &Policy,
    stores: &[Store],
    accounts: &[BigCommerceAccount],
) {
    for store in stores {
        let has_b2b = accounts
            .iter()
            .any(|a| a.id == store.account && a.b2b.is_some());
        if has_b2b {
            continue;
        }
        for (i, r) in policy.rules().iter().enumerate() {
            if r.effect != Effect::Allow || !policy.rules_for(&store.id).any(|x| x == r) {
                continue;
            }
            let template = r.template.as_ref().or(store.template.as_ref());
            let from_template = template
                .and_then(|t| policy.template(t))
                .and_then(|t| t.roles.get(&r.role))
                .and_then(|g| g.b2b);
            if r.grant.b2b.or(from_template).is_some() {
                c.error(
                    &[key("rule"), Seg::Index(i), key("name")],
                    format!(
                        "rule \"{}\" gives a B2B Edition role on store \"{}\", but [[bigcommerce]] \"{}\" has no `b2b_access_token`",
                        r.name, store.id, store.account
                    ),
                );
            }
        }
    }
}

/// `storegate check`'s warnings: the policy's own findings placed on their lines, plus rules
/// that list group DNs for IdPs that reduce DNs to names.
fn warnings(c: &Checker<'_>, policy: &Policy, f: &FileConfig) -> Vec<Diagnostic> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut out: Vec<Diagnostic> = policy
        .lint(now)
        .into_iter()
        .map(|finding| {
            let path = match finding.at {
                Location::Store(i) => [key("store"), Seg::Index(i), key("id")],
                Location::Rule(i) => [key("rule"), Seg::Index(i), key("name")],
            };
            Diagnostic {
                line: c.lines.line_of(&path),
                message: finding.message,
            }
        })
        .collect();
    for (i, r) in f.rules.iter().enumerate() {
        let dns: Vec<&String> = r
            .conditions
            .groups_any
            .iter()
            .filter(|g| g.contains('='))
            .collect();
        if dns.is_empty() {
            continue;
        }
        let reducing: Vec<&IdpFile> = f
            .idps
            .iter()
            .filter(|idp| r.conditions.idps.is_empty() || r.conditions.idps.contains(&idp.id))
            .collect();
        if !reducing.is_empty() && reducing.iter().all(|idp| idp.claims.group_dn_to_name) {
            out.push(Diagnostic {
                line: c.lines.line_of(&[key("rule"), Seg::Index(i), key("groups_any")]),
                message: format!(
                    "rule \"{}\" lists group DN {} but its IdP(s) reduce DNs to names (group_dn_to_name): write the name instead",
                    r.name, dns[0]
                ),
            });
        }
    }
    out.extend(old_switch_names(c, f));
    out.extend(email_domains_never_vouched(c, f));
    out.extend(webhooks_unreachable(c, f));
    out.extend(permission_set::unknown_codes(c, f));
    out.sort_by_key(|d| d.line);
    out
}

/// Dangerous switches known by an old name that does not say so (`allow_sha1`).
fn old_switch_names(c: &Checker<'_>, f: &FileConfig) -> Vec<Diagnostic> {
    f.idps
        .iter()
        .enumerate()
        .filter(|(_, idp)| idp.allow_sha1.is_some())
        .map(|(i, idp)| Diagnostic {
            line: c.lines.line_of(&[key("idp"), Seg::Index(i), key("allow_sha1")]),
            message: format!(
                "[[idp]] \"{}\": `allow_sha1` is the old name of `dangerous_allow_sha1` (DANGER: RSA-SHA1 signatures and SHA-1 digests accepted): rename it",
                idp.id
            ),
        })
        .collect()
}

/// BigCommerce delivers webhooks to https on port 443 only (docs/bigcommerce.md): with another
/// `public_url`, `webhooks sync` is refused by BigCommerce.
fn webhooks_unreachable(c: &Checker<'_>, f: &FileConfig) -> Vec<Diagnostic> {
    let Ok(url) = Url::parse(&f.public_url) else {
        return Vec::new();
    };
    if url.scheme() == "https" && url.port_or_known_default() == Some(443) {
        return Vec::new();
    }
    f.bigcommerce
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let k = if b.webhook_secret.is_some() {
                "webhook_secret"
            } else if b.webhook_secret_file.is_some() {
                "webhook_secret_file"
            } else {
                return None;
            };
            Some(Diagnostic {
                line: c.lines.line_of(&[key("bigcommerce"), Seg::Index(i), key(k)]),
                message: format!(
                    "[[bigcommerce]] \"{}\" has a webhook secret, but BigCommerce delivers webhooks to https on port 443 only and `public_url` is {url}: `storegate webhooks sync` will be refused",
                    b.id
                ),
            })
        })
        .collect()
}

/// An allow rule on `email_domains` whose IdPs are all SAML without `trust_email` can never
/// match: SAML carries no `email_verified` (issue 10).
fn email_domains_never_vouched(c: &Checker<'_>, f: &FileConfig) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, r) in f.rules.iter().enumerate() {
        if r.conditions.email_domains.is_empty() || r.effect.as_deref() == Some("deny") {
            continue;
        }
        let idps: Vec<&IdpFile> = f
            .idps
            .iter()
            .filter(|idp| r.conditions.idps.is_empty() || r.conditions.idps.contains(&idp.id))
            .collect();
        let unvouched = |idp: &&IdpFile| idp.protocol == "saml" && !idp.trust_email;
        if let Some(first) = idps.first()
            && idps.iter().all(unvouched)
        {
            out.push(Diagnostic {
                line: c.lines.line_of(&[key("rule"), Seg::Index(i), key("email_domains")]),
                message: format!(
                    "rule \"{}\" matches on email_domains, which needs an address the IdP vouches for, and SAML IdP \"{}\" has no email_verified: it never matches; set trust_email = true on that [[idp]] if its directory owns the addresses",
                    r.name, first.id
                ),
            });
        }
    }
    out
}

fn session(c: &mut Checker<'_>, f: &FileConfig) -> Option<SessionConfig> {
    let s = &f.session;
    let base = [key("session")];
    let backend = match s.store.as_str() {
        "memory" => SessionBackend::Memory,
        "redis" => SessionBackend::Redis(redis_topology::topology(c, s)?),
        other => {
            c.error(
                &[key("session"), key("store")],
                format!("`session.store`: \"{other}\" is not \"memory\" or \"redis\""),
            );
            return None;
        }
    };
    let idle = c.duration(&[key("session"), key("idle_timeout")], &s.idle_timeout);
    let absolute = c.duration(
        &[key("session"), key("absolute_timeout")],
        &s.absolute_timeout,
    );
    if let (Some(i), Some(a)) = (idle, absolute)
        && i > a
    {
        c.error(
            &base,
            "`session.idle_timeout` is longer than `session.absolute_timeout`",
        );
    }
    if s.cookie_name.is_empty()
        || !s
            .cookie_name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
    {
        c.error(
            &[key("session"), key("cookie_name")],
            "`session.cookie_name` must be letters, digits, '_' or '-'",
        );
    }
    let redis_ca_file = s.redis_ca_file.as_ref().map(PathBuf::from);
    if redis_ca_file.is_some() {
        let p = [key("session"), key("redis_ca_file")];
        match &backend {
            SessionBackend::Redis(t) if t.uses_tls() => {}
            _ => c.error(
                &p,
                "`session.redis_ca_file` is only used with `rediss://` (TLS) Redis URLs (`session.redis_url` or `session.redis_nodes`)",
            ),
        }
    }
    let cookie_domain = s
        .cookie_domain
        .as_deref()
        .and_then(|d| cookie_domain(c, d, &f.public_url));
    Some(SessionConfig {
        backend,
        redis_ca_file,
        idle_timeout: idle?,
        absolute_timeout: absolute?,
        cookie_name: s.cookie_name.clone(),
        cookie_domain,
    })
}

/// `session.cookie_domain`: a host name (at least two labels, no port) that `public_url`'s host
/// is, or ends with after a dot; browsers would silently drop any other cookie.
fn cookie_domain(c: &mut Checker<'_>, raw: &str, public_url: &str) -> Option<String> {
    let domain = raw.trim().trim_start_matches('.').to_ascii_lowercase();
    let host = url::Url::parse(public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    let is_name = domain.contains('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-'))
        && !domain
            .split('.')
            .all(|l| l.chars().all(|ch| ch.is_ascii_digit()));
    let covers = host
        .as_deref()
        .is_some_and(|h| h == domain || h.ends_with(&format!(".{domain}")));
    if is_name && covers {
        return Some(domain);
    }
    c.error(
        &[key("session"), key("cookie_domain")],
        format!(
            "`session.cookie_domain` {raw:?} must be a domain name (like \"example.com\") that public_url's host is in"
        ),
    );
    None
}

const ASYMMETRIC_ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn idp_config(c: &mut Checker<'_>, i: usize, idp: &IdpFile) -> Option<IdpConfig> {
    let t = [key("idp"), Seg::Index(i)];
    let at = |k: &str| [key("idp"), Seg::Index(i), key(k)];
    if idp.id.is_empty()
        || !idp
            .id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        c.error(&at("id"), format!("[[idp]] id \"{}\" must be letters, digits, '-' or '_' (it is part of the redirect URI)", idp.id));
    }
    if idp.protocol != "oidc" {
        c.error(
            &at("protocol"),
            format!(
                "[[idp]] \"{}\": protocol \"{}\" is not supported (use \"oidc\" or \"saml\")",
                idp.id, idp.protocol
            ),
        );
        return None;
    }
    let issuer = match &idp.issuer {
        Some(s) => {
            let s = c.interpolate(&at("issuer"), s)?;
            if let Some(u) = c.url(&at("issuer"), &s)
                && u.scheme() == "http"
                && !u
                    .host_str()
                    .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]")
            {
                c.error(&at("issuer"), format!("[[idp]] \"{}\": the issuer must use https (plain http is allowed only on loopback, for tests)", idp.id));
            }
            Some(s)
        }
        None => {
            c.error(&t, format!("[[idp]] \"{}\" needs `issuer`", idp.id));
            None
        }
    };
    let client_id = match &idp.client_id {
        Some(s) => c.interpolate(&at("client_id"), s),
        None => {
            c.error(&t, format!("[[idp]] \"{}\" needs `client_id`", idp.id));
            None
        }
    };
    let client_secret = c.secret(
        &t,
        "client_secret",
        &idp.client_secret,
        Some(&idp.client_secret_file),
        false,
    );
    let auth_method = match idp.token_auth_method.as_deref() {
        None | Some("client_secret_basic") => TokenAuthMethod::ClientSecretBasic,
        Some("client_secret_post") => TokenAuthMethod::ClientSecretPost,
        Some(other) => {
            c.error(&at("token_auth_method"), format!("`token_auth_method`: \"{other}\" is not client_secret_basic or client_secret_post"));
            TokenAuthMethod::ClientSecretBasic
        }
    };
    let scopes = idp
        .scopes
        .clone()
        .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        c.error(&at("scopes"), "`scopes` must include \"openid\"");
    }
    let algs = idp
        .id_token_algs
        .clone()
        .unwrap_or_else(|| vec!["RS256".into()]);
    for alg in &algs {
        if !ASYMMETRIC_ALGS.contains(&alg.as_str()) {
            c.error(
                &at("id_token_algs"),
                format!(
                    "`id_token_algs`: \"{alg}\" is not accepted; use one of {}",
                    ASYMMETRIC_ALGS.join(", ")
                ),
            );
        }
    }
    let skew = match &idp.clock_skew {
        Some(s) => c.duration(&at("clock_skew"), s)?,
        None => Duration::from_secs(60),
    };
    let end_session_url = idp.end_session_url.as_ref().and_then(|raw| {
        let s = c.interpolate(&at("end_session_url"), raw)?;
        let u = c.url(&at("end_session_url"), &s)?;
        let loopback = u
            .host_str()
            .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]");
        if u.scheme() != "https" && !(u.scheme() == "http" && loopback) {
            c.error(&at("end_session_url"), format!("[[idp]] \"{}\": `end_session_url` must use https (plain http only on loopback, for tests)", idp.id));
            return None;
        }
        Some(u)
    });
    let claims = ClaimMapping {
        trust_email: idp.trust_email,
        ..claim_mapping(&idp.claims)
    };
    Some(IdpConfig {
        id: IdpId::new(idp.id.clone()),
        display_name: idp.display_name.clone().unwrap_or_else(|| idp.id.clone()),
        protocol: Protocol::Oidc(OidcIdp {
            issuer: issuer?,
            client_id: client_id?,
            client_secret,
            auth_method,
            scopes,
            id_token_algs: algs,
            clock_skew: skew,
            userinfo: idp.userinfo.unwrap_or(true),
            end_session_url,
        }),
        claims,
    })
}

fn account(c: &mut Checker<'_>, i: usize, b: &BigCommerceFile) -> Option<BigCommerceAccount> {
    let t = [key("bigcommerce"), Seg::Index(i)];
    let at = |k: &str| [key("bigcommerce"), Seg::Index(i), key(k)];
    if b.store_hash.is_empty() || !b.store_hash.chars().all(|ch| ch.is_ascii_alphanumeric()) {
        c.error(
            &at("store_hash"),
            format!(
                "`store_hash` \"{}\" must be the store's alphanumeric hash",
                b.store_hash
            ),
        );
    }
    let api_base = match &b.api_base {
        Some(raw) => {
            let raw = c.interpolate(&at("api_base"), raw)?;
            c.url(&at("api_base"), &raw)
        }
        None => Url::parse("https://api.bigcommerce.com").ok(),
    };
    let access_token = c.secret(
        &t,
        "access_token",
        &b.access_token,
        Some(&b.access_token_file),
        true,
    );
    let client_id = match &b.client_id {
        Some(s) => c.interpolate(&at("client_id"), s),
        None => {
            c.error(&t, format!("[[bigcommerce]] \"{}\" needs `client_id` (the API account that signs login tokens)", b.id));
            None
        }
    };
    let client_secret = c.secret(
        &t,
        "client_secret",
        &b.client_secret,
        Some(&b.client_secret_file),
        true,
    );
    let timeout = match &b.timeout {
        Some(s) => c.duration(&at("timeout"), s)?,
        None => Duration::from_secs(10),
    };
    let b2b_token = c.secret(
        &t,
        "b2b_access_token",
        &b.b2b_access_token,
        Some(&b.b2b_access_token_file),
        false,
    );
    let b2b = match (b2b_token, &b.b2b_api_base) {
        (None, Some(_)) => {
            c.error(
                &at("b2b_api_base"),
                "`b2b_api_base` needs `b2b_access_token` (or `b2b_access_token_file`)",
            );
            None
        }
        (None, None) => None,
        (Some(token), base) => {
            let raw = base
                .clone()
                .unwrap_or_else(|| "https://api-b2b.bigcommerce.com/api/v3/io".into());
            let raw = c.interpolate(&at("b2b_api_base"), &raw)?;
            c.url(&at("b2b_api_base"), &raw)
                .map(|api_base| super::B2bAccess {
                    api_base,
                    access_token: token,
                })
        }
    };
    let webhook_secret = c.secret(
        &t,
        "webhook_secret",
        &b.webhook_secret,
        Some(&b.webhook_secret_file),
        false,
    );
    if let Some(s) = &webhook_secret
        && s.expose().len() < MIN_WEBHOOK_SECRET
    {
        let k = if b.webhook_secret.is_some() {
            "webhook_secret"
        } else {
            "webhook_secret_file"
        };
        c.error(
            &at(k),
            format!(
                "the webhook secret of [[bigcommerce]] \"{}\" is {} characters; use at least {MIN_WEBHOOK_SECRET} random ones (e.g. `openssl rand -hex 24`)",
                b.id,
                s.expose().len()
            ),
        );
    }
    Some(BigCommerceAccount {
        id: b.id.clone(),
        store_hash: b.store_hash.clone(),
        api_base: api_base?,
        access_token: access_token?,
        client_id: client_id?,
        client_secret: client_secret?,
        timeout,
        b2b,
        webhook_secret,
    })
}

/// The shortest webhook secret `check` accepts: anyone who guesses it can fake BigCommerce's
/// side of the audit trail.
const MIN_WEBHOOK_SECRET: usize = 24;

fn store(c: &mut Checker<'_>, i: usize, s: &StoreFile, f: &FileConfig) -> Option<Store> {
    let at = |k: &str| [key("store"), Seg::Index(i), key(k)];
    if s.id.is_empty()
        || !s
            .id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        c.error(&at("id"), format!("[[store]] id \"{}\" must be letters, digits, '-' or '_' (it is part of the launch URL)", s.id));
    }
    if !f.bigcommerce.iter().any(|b| b.id == s.bigcommerce) {
        c.error(
            &at("bigcommerce"),
            format!(
                "[[store]] \"{}\" names bigcommerce account \"{}\", which is not configured",
                s.id, s.bigcommerce
            ),
        );
    }
    if s.channel_id == 0 {
        c.error(&at("channel_id"), "`channel_id` must be 1 or more");
    }
    if let Some(t) = &s.template
        && !f.templates.iter().any(|x| &x.name == t)
    {
        c.error(
            &at("template"),
            format!(
                "[[store]] \"{}\" names template \"{t}\", which is not configured",
                s.id
            ),
        );
    }
    portal::store_tags(c, &at("tags"), &s.tags);
    let url = c.url(&at("url"), &s.url);
    let default_path = match &s.default_path {
        Some(p) => match LocalPath::parse(p) {
            Ok(p) => Some(p),
            Err(e) => {
                c.error(
                    &at("default_path"),
                    format!("`default_path` \"{p}\" must be a path on the storefront: {e}"),
                );
                None
            }
        },
        None => LocalPath::parse("/account.php").ok(),
    };
    Some(Store {
        id: StoreId::new(s.id.clone()),
        name: s.name.clone(),
        account: s.bigcommerce.clone(),
        channel_id: s.channel_id,
        url: url?,
        description: s.description.clone(),
        default_path: default_path?,
        bind_request_ip: s.bind_request_ip,
        tags: s.tags.iter().map(|t| t.to_lowercase()).collect(),
        template: s.template.clone(),
        logo: s
            .logo
            .as_deref()
            .and_then(|raw| portal::store_logo(c, &at("logo"), raw)),
    })
}

/// The grant fields shared by `[template.roles.X]` and `[[rule]]`, as written in the file.
struct GrantFields<'a> {
    customer_group: &'a Option<String>,
    b2b: &'a Option<B2bFile>,
    allowed_paths: &'a Option<Vec<String>>,
    require_acr: &'a Option<String>,
    max_session_age: &'a Option<String>,
    control_panel: &'a Option<String>,
}

fn grant_spec(c: &mut Checker<'_>, base: &[Seg], g: GrantFields<'_>) -> GrantSpec {
    let at = |k: &str| [base, &[key(k)]].concat();
    let b2b = g.b2b.as_ref().and_then(|b| {
        let role = match (&b.role, b.company_role_id) {
            (Some(_), Some(_)) => {
                c.error(
                    &at("b2b"),
                    "`b2b`: set either `role` or `company_role_id`, not both",
                );
                return None;
            }
            (None, Some(id)) => B2bRole::Custom(id),
            (Some(r), None) => match B2bRole::parse(r) {
                Some(role) => role,
                None => {
                    c.error(
                        &at("b2b"),
                        format!(
                            "`b2b.role`: \"{r}\" is not \"admin\", \"senior_buyer\" or \"junior_buyer\" (use company_role_id for a custom role)"
                        ),
                    );
                    return None;
                }
            },
            (None, None) => {
                c.error(&at("b2b"), "`b2b` needs `role` or `company_role_id`");
                return None;
            }
        };
        if b.company_id == 0 {
            c.error(&at("b2b"), "`b2b.company_id` must be 1 or more");
        }
        Some(B2bGrant {
            company_id: b.company_id,
            role,
        })
    });
    if let Some(paths) = g.allowed_paths {
        if paths.is_empty() {
            c.error(
                &at("allowed_paths"),
                "`allowed_paths` is empty: no page could be opened (leave it out to allow any path)",
            );
        }
        for p in paths {
            let dots = p.split('/').any(|s| s == "." || s == "..");
            if LocalPath::parse(p).is_err() || dots || p.contains(['?', '#']) {
                c.error(
                    &at("allowed_paths"),
                    format!("`allowed_paths`: \"{p}\" must be a plain storefront path like \"/account.php\" or \"/b2b/\""),
                );
            }
        }
    }
    if let Some(acr) = g.require_acr
        && (acr.is_empty() || acr.chars().any(|ch| ch.is_whitespace() || ch.is_control()))
    {
        c.error(
            &at("require_acr"),
            "`require_acr` must be one authentication contract URI, without spaces",
        );
    }
    let max_session_age = g.max_session_age.as_ref().and_then(|raw| {
        let d = c.duration(&at("max_session_age"), raw)?;
        if d.as_secs() == 0 {
            c.error(
                &at("max_session_age"),
                "`max_session_age` must be longer than 0s",
            );
        }
        i64::try_from(d.as_secs()).ok()
    });
    GrantSpec {
        customer_group: g.customer_group.as_deref().map(CustomerGroupRef::parse),
        b2b,
        allowed_paths: g.allowed_paths.clone(),
        require_acr: g.require_acr.clone(),
        max_session_age,
        control_panel: g.control_panel.clone(),
    }
}

fn template(c: &mut Checker<'_>, i: usize, t: &TemplateFile) -> Template {
    if t.roles.is_empty() {
        c.error(
            &[key("template"), Seg::Index(i), key("name")],
            format!("template \"{}\" defines no roles", t.name),
        );
    }
    let roles = t
        .roles
        .iter()
        .map(|(role, g)| {
            let base = [key("template"), Seg::Index(i), key("roles"), key(role)];
            let spec = grant_spec(
                c,
                &base,
                GrantFields {
                    customer_group: &g.customer_group,
                    b2b: &g.b2b,
                    allowed_paths: &g.allowed_paths,
                    require_acr: &g.require_acr,
                    max_session_age: &g.max_session_age,
                    control_panel: &g.control_panel,
                },
            );
            (role.clone(), spec)
        })
        .collect();
    Template {
        name: t.name.clone(),
        roles,
    }
}

fn rule(
    c: &mut Checker<'_>,
    i: usize,
    r: &RuleFile,
    stores: &[&str],
    idps: &[&str],
    templates: &[TemplateFile],
) -> Option<Rule> {
    let base = [key("rule"), Seg::Index(i)];
    let at = |k: &str| [key("rule"), Seg::Index(i), key(k)];
    let effect = match r.effect.as_deref() {
        None | Some("allow") => Effect::Allow,
        Some("deny") => Effect::Deny,
        Some(other) => {
            c.error(
                &at("effect"),
                format!(
                    "rule \"{}\": effect \"{other}\" is not \"allow\" or \"deny\"",
                    r.name
                ),
            );
            return None;
        }
    };
    let selector = if r.stores.iter().any(|s| s == "*") {
        if r.stores.len() > 1 || !r.store_tags.is_empty() {
            c.error(
                &at("stores"),
                format!(
                    "rule \"{}\": \"*\" already means every store; list nothing else",
                    r.name
                ),
            );
        }
        StoreSelector::All
    } else {
        if r.stores.is_empty() && r.store_tags.is_empty() {
            c.error(
                &base,
                format!(
                    "rule \"{}\" lists no stores or store_tags (use stores = [\"*\"] for every store)",
                    r.name
                ),
            );
        }
        for s in &r.stores {
            if !stores.contains(&s.as_str()) {
                c.error(
                    &at("stores"),
                    format!(
                        "rule \"{}\" names store \"{s}\", which is not configured",
                        r.name
                    ),
                );
            }
        }
        StoreSelector::Only(r.stores.iter().map(|s| StoreId::new(s.clone())).collect())
    };
    let role = match (&r.role, effect) {
        (Some(role), Effect::Allow) => role.clone(),
        (Some(_), Effect::Deny) => {
            c.error(
                &at("role"),
                format!("deny rule \"{}\" cannot give a role", r.name),
            );
            String::new()
        }
        (None, Effect::Deny) => String::new(),
        (None, Effect::Allow) => {
            c.error(&base, format!("allow rule \"{}\" needs a `role`", r.name));
            String::new()
        }
    };
    if let Some(t) = &r.template {
        match templates.iter().find(|x| &x.name == t) {
            None => c.error(
                &at("template"),
                format!(
                    "rule \"{}\" names template \"{t}\", which is not configured",
                    r.name
                ),
            ),
            Some(tf) if effect == Effect::Allow && !tf.roles.contains_key(&role) => c.error(
                &at("role"),
                format!(
                    "rule \"{}\" gives role \"{role}\", which its template \"{t}\" does not define",
                    r.name
                ),
            ),
            Some(_) => {}
        }
    }
    if effect == Effect::Deny {
        let grant_keys = [
            ("customer_group", r.customer_group.is_some()),
            ("b2b", r.b2b.is_some()),
            ("allowed_paths", r.allowed_paths.is_some()),
            ("require_acr", r.require_acr.is_some()),
            ("max_session_age", r.max_session_age.is_some()),
            ("template", r.template.is_some()),
            ("expires_claim", r.expires_claim.is_some()),
        ];
        for (k, set) in grant_keys {
            if set {
                c.error(
                    &at(k),
                    format!(
                        "deny rule \"{}\" cannot set `{k}`: it grants nothing",
                        r.name
                    ),
                );
            }
        }
    }
    let conditions =
        conditions::validate_conditions(c, &base, Owner::Rule(&r.name), &r.conditions, idps);
    if let Some(claim) = &r.expires_claim
        && claim.trim().is_empty()
    {
        c.error(&at("expires_claim"), "`expires_claim` is empty");
    }
    let grant = grant_spec(
        c,
        &base,
        GrantFields {
            customer_group: &r.customer_group,
            b2b: &r.b2b,
            allowed_paths: &r.allowed_paths,
            require_acr: &r.require_acr,
            max_session_age: &r.max_session_age,
            control_panel: &r.control_panel,
        },
    );
    let not_before = c.time(&at("not_before"), &r.not_before);
    let not_after = c.time(&at("not_after"), &r.not_after);
    if let (Some(a), Some(b)) = (not_before, not_after)
        && a >= b
    {
        c.error(
            &at("not_after"),
            format!(
                "rule \"{}\" can never match: not_after is not later than not_before",
                r.name
            ),
        );
    }
    Some(Rule {
        name: r.name.clone(),
        effect,
        conditions,
        stores: selector,
        store_tags: r.store_tags.iter().map(|t| t.to_lowercase()).collect(),
        role,
        template: r.template.clone(),
        grant,
        not_before,
        not_after,
        expires_claim: r.expires_claim.clone(),
    })
}

fn claim_mapping(cl: &ClaimsFile) -> ClaimMapping {
    let d = ClaimMapping::default();
    ClaimMapping {
        email: cl.email.clone().unwrap_or(d.email),
        given_name: cl.given_name.clone().unwrap_or(d.given_name),
        family_name: cl.family_name.clone().unwrap_or(d.family_name),
        name: cl.name.clone().unwrap_or(d.name),
        groups: cl.groups.clone().unwrap_or(d.groups),
        roles: cl.roles.clone().unwrap_or(d.roles),
        group_dn_to_name: cl.group_dn_to_name,
        ..d
    }
}

/// `[saml]`: entity ID, endpoints derived from `public_url`, key and certificate read and checked.
fn saml_sp(c: &mut Checker<'_>, f: &FileConfig, public_url: &Url) -> Option<SamlSp> {
    let s = f.saml.as_ref()?;
    let at = |k: &str| [key("saml"), key(k)];
    let base = public_url.as_str().trim_end_matches('/');
    let metadata_url = format!("{base}/saml/metadata");
    let entity_id = match &s.entity_id {
        Some(e) if e.trim().is_empty() => {
            c.error(&at("entity_id"), "`saml.entity_id` is empty");
            return None;
        }
        Some(e) => e.clone(),
        None => metadata_url.clone(),
    };
    let read = |c: &mut Checker<'_>, k: &str, p: &str| -> Option<String> {
        match c.env.read_file(Path::new(p)) {
            Ok(t) => Some(t),
            Err(e) => {
                c.error(
                    &at(k),
                    format!("`saml.{k}`: cannot read {p}: {e} (`storegate certs` makes a key and certificate)"),
                );
                None
            }
        }
    };
    let key_pem = read(c, "key_file", &s.key_file);
    let cert_pem = read(c, "cert_file", &s.cert_file);
    let (key_pem, cert_pem) = (key_pem?, cert_pem?);
    if let Err(e) = crate::federation::saml::trust::SpKeys::from_pem(&key_pem, &cert_pem) {
        c.error(&at("cert_file"), format!("`[saml]`: {e}"));
        return None;
    }
    Some(SamlSp {
        entity_id,
        acs_url: format!("{base}/saml/acs"),
        slo_url: format!("{base}/saml/slo"),
        metadata_url,
        key_pem: Secret::new(key_pem),
        cert_pem,
        sign_metadata: s.sign_metadata,
        sign_authn_requests: s.sign_authn_requests,
    })
}

/// A `protocol = "saml"` IdP. Its metadata must name a signing certificate: samael skips
/// signature verification altogether for an IdP without one, so such an IdP never loads.
fn saml_idp_config(
    c: &mut Checker<'_>,
    i: usize,
    idp: &IdpFile,
    have_sp: bool,
    allow_insecure_http: bool,
) -> Option<IdpConfig> {
    let t = [key("idp"), Seg::Index(i)];
    let at = |k: &str| [key("idp"), Seg::Index(i), key(k)];
    if idp.id.is_empty()
        || !idp
            .id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        c.error(
            &at("id"),
            format!(
                "[[idp]] id \"{}\" must be letters, digits, '-' or '_'",
                idp.id
            ),
        );
    }
    if !have_sp {
        c.error(
            &at("protocol"),
            format!("[[idp]] \"{}\" uses SAML, which needs a `[saml]` table (the service provider's key and certificate)", idp.id),
        );
    }
    for (k, set) in [
        ("issuer", idp.issuer.is_some()),
        ("client_id", idp.client_id.is_some()),
        ("client_secret", idp.client_secret.is_some()),
        ("end_session_url", idp.end_session_url.is_some()),
    ] {
        if set {
            c.error(
                &at(k),
                format!("`{k}` is an OIDC setting; this IdP uses SAML"),
            );
        }
    }
    // docs/security.md: "Metadata only over https (or a local file), never downgraded on redirect".
    // The metadata names the keys every response is checked with: over plain http, anyone on
    // the path could swap them. Loopback http is for tests, and only with allow_insecure_http.
    let metadata_url = match &idp.metadata_url {
        Some(u) => c.url(&at("metadata_url"), u).filter(|u| {
            let ok = u.scheme() == "https"
                || (allow_insecure_http && crate::federation::saml::trust::is_loopback(u));
            if !ok {
                c.error(
                    &at("metadata_url"),
                    format!(
                        "[[idp]] \"{}\": `metadata_url` must use https (plain http only on loopback, with `allow_insecure_http = true`, for tests)",
                        idp.id
                    ),
                );
            }
            ok
        }),
        None => None,
    };
    let metadata_signing_cert = match &idp.metadata_signing_cert {
        Some(p) => match c.env.read_file(Path::new(p)) {
            Ok(pem) => match crate::federation::saml::trust::cert_der_from_pem(&pem) {
                Ok(_) => Some(pem),
                Err(e) => {
                    c.error(
                        &at("metadata_signing_cert"),
                        format!("[[idp]] \"{}\": `metadata_signing_cert` {p}: {e}", idp.id),
                    );
                    None
                }
            },
            Err(e) => {
                c.error(
                    &at("metadata_signing_cert"),
                    format!(
                        "[[idp]] \"{}\": cannot read `metadata_signing_cert` {p}: {e}",
                        idp.id
                    ),
                );
                None
            }
        },
        None => None,
    };
    let authn_context = authn_context_rule(c, i, idp);
    let metadata_xml = match &idp.metadata_file {
        Some(p) => match c.env.read_file(Path::new(p)) {
            Ok(x) => Some(x),
            Err(e) => {
                c.error(
                    &at("metadata_file"),
                    format!("cannot read the IdP metadata {p}: {e}"),
                );
                None
            }
        },
        // Fetched at start-up and refreshed by the gateway (federation::saml). A refused URL
        // is reported above, once.
        None if idp.metadata_url.is_some() => Some(String::new()),
        None => {
            c.error(
                &t,
                format!(
                    "[[idp]] \"{}\" needs `metadata_file` or `metadata_url` (the IdP's SAML metadata)",
                    idp.id
                ),
            );
            None
        }
    };
    let meta = match &metadata_xml {
        Some(x) if x.is_empty() => Some(String::new()),
        Some(x) => {
            match crate::federation::saml::trust::trusted_idp_metadata(
                x,
                metadata_signing_cert.as_deref(),
            ) {
                Ok(m) => Some(m.entity_id),
                Err(e) => {
                    c.error(&at("metadata_file"), format!("[[idp]] \"{}\": {e}", idp.id));
                    None
                }
            }
        }
        None => None,
    };
    let refresh = match &idp.metadata_refresh {
        Some(r) => c.duration(&at("metadata_refresh"), r),
        None => Some(Duration::from_secs(3600)),
    };
    let skew = match &idp.clock_skew {
        Some(s) => c.duration(&at("clock_skew"), s),
        None => Some(Duration::from_secs(60)),
    };
    if skew.is_some_and(|s| s > Duration::from_secs(600)) {
        c.error(
            &at("clock_skew"),
            "`clock_skew` above 10m would keep expired assertions usable",
        );
    }
    // The switch says what it is; the old name still works (`check` warns), but not both at once.
    let allow_sha1 = match (idp.dangerous_allow_sha1, idp.allow_sha1) {
        (Some(new), Some(_)) => {
            c.error(
                &at("allow_sha1"),
                "`allow_sha1` is the old name of `dangerous_allow_sha1`: give only `dangerous_allow_sha1`",
            );
            new
        }
        (Some(v), None) | (None, Some(v)) => v,
        (None, None) => false,
    };
    let mapping = idp.attributes.as_ref().unwrap_or(&idp.claims);
    // SAML has no `email_verified`: only `trust_email` makes an address count as verified.
    let claims = ClaimMapping {
        email_verified: None,
        trust_email: idp.trust_email,
        ..claim_mapping(mapping)
    };
    let meta = meta?;
    Some(IdpConfig {
        id: IdpId::new(idp.id.clone()),
        display_name: idp.display_name.clone().unwrap_or_else(|| idp.id.clone()),
        protocol: Protocol::Saml(SamlIdp {
            metadata_xml: metadata_xml?,
            metadata_url,
            metadata_refresh: refresh?,
            entity_id: meta,
            dangerous_allow_sha1: allow_sha1,
            allow_unsolicited: idp.allow_unsolicited,
            clock_skew: skew?,
            nameid_format: idp.nameid_format.clone(),
            authn_context: authn_context?,
            metadata_signing_cert,
        }),
        claims,
    })
}

/// `authn_context_comparison` and `authn_context_order` of a SAML IdP (step-up, issue 10).
fn authn_context_rule(c: &mut Checker<'_>, i: usize, idp: &IdpFile) -> Option<AuthnContextRule> {
    let at = |k: &str| [key("idp"), Seg::Index(i), key(k)];
    let order = idp.authn_context_order.clone().unwrap_or_default();
    match idp.authn_context_comparison.as_deref() {
        None | Some("exact") => {
            if idp.authn_context_order.is_some() {
                c.error(
                    &at("authn_context_order"),
                    "`authn_context_order` only applies with `authn_context_comparison = \"minimum\"`",
                );
                return None;
            }
            Some(AuthnContextRule::Exact)
        }
        Some("minimum") => {
            let mut seen = std::collections::BTreeSet::new();
            let bad = order.iter().find(|cl| {
                cl.is_empty()
                    || cl.chars().any(|ch| ch.is_whitespace() || ch.is_control())
                    || !seen.insert(cl.as_str())
            });
            if order.is_empty() || bad.is_some() {
                let key = if idp.authn_context_order.is_some() {
                    "authn_context_order"
                } else {
                    "authn_context_comparison"
                };
                c.error(
                    &at(key),
                    "`authn_context_comparison = \"minimum\"` needs `authn_context_order`: the authentication context class URIs from weakest to strongest, each once, without spaces",
                );
                return None;
            }
            Some(AuthnContextRule::Minimum { order })
        }
        Some(other) => {
            c.error(
                &at("authn_context_comparison"),
                format!("`authn_context_comparison` is \"{other}\"; use \"exact\" or \"minimum\""),
            );
            None
        }
    }
}
