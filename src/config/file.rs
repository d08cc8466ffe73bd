//! The configuration file's shape: plain serde types, one per TOML table.
//!
//! Every field documents its default. Unknown keys are reported (with file:line) by the loader, not
//! silently ignored. Nothing here is trusted yet: `validate` turns this shape into [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

pub use super::conditions::{ConditionsFile, OneOrMany};

#[derive(Debug, Deserialize)]
pub struct FileConfig {
    /// The externally visible base URL, e.g. `https://sso.example.com`. Required.
    pub public_url: String,
    /// Socket address to listen on. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Permit an `http://` public_url (cookies lose `Secure`). Development only. Default false.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Whom users without any store should ask, shown on the portal. Default: "your IT service desk".
    #[serde(default)]
    pub support_contact: Option<String>,
    /// Reverse proxies / load balancers (CIDRs, e.g. `["10.0.0.0/8"]`) whose `X-Forwarded-For` is
    /// believed. The client address (rate limits, `request_ip`) is then the right-most address in
    /// that header that is not itself a trusted proxy. Default: none (the TCP peer is the client).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub session: SessionFile,
    #[serde(default)]
    pub audit: AuditFile,
    /// The SAML service provider (one per gateway); required when any `[[idp]]` uses SAML.
    #[serde(default)]
    pub saml: Option<SamlSpFile>,
    #[serde(default, rename = "idp")]
    pub idps: Vec<IdpFile>,
    #[serde(default, rename = "bigcommerce")]
    pub bigcommerce: Vec<BigCommerceFile>,
    #[serde(default, rename = "store")]
    pub stores: Vec<StoreFile>,
    /// BigCommerce accounts whose control-panel users are managed (issue 12).
    #[serde(default, rename = "account")]
    pub accounts: Vec<super::account::AccountFile>,
    #[serde(default, rename = "template")]
    pub templates: Vec<TemplateFile>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleFile>,
    /// Control-panel permission sets grants name (issue 12).
    #[serde(default, rename = "permission_set")]
    pub permission_sets: Vec<super::permission_set::PermissionSetFile>,
    /// SCIM 2.0 service (issue 5).
    #[serde(default)]
    pub scim: super::provisioning::ScimFile,
    /// Desired state, reconciler and work queue (issue 5).
    #[serde(default)]
    pub provisioning: super::provisioning::ProvisioningFile,
    /// OpenTelemetry trace export (issue 6). Off by default.
    #[serde(default)]
    pub telemetry: super::telemetry::TelemetryFile,
    /// Sign-in rate limit per client address (issue 10).
    #[serde(default)]
    pub rate_limit: super::rate_limit::RateLimitFile,
    /// Web tools behind forward authentication or the built-in proxy (issue 14).
    #[serde(default, rename = "route")]
    pub routes: Vec<super::route::RouteFile>,
    /// Identity tokens and proxy limits (issue 14).
    #[serde(default)]
    pub forward_auth: super::route::ForwardAuthFile,
    /// Who may use the IT console under `/admin` (issue 13). Absent: `/admin` answers 404.
    #[serde(default)]
    pub admin: Option<AdminFile>,
}

/// `[admin]`: the conditions of a `[[rule]]` (kinds AND-ed, values OR-ed), no stores or role.
/// At least one condition is required.
#[derive(Debug, Deserialize)]
pub struct AdminFile {
    /// The rule's name in decisions, 403 pages and audit events. Default `"admin"`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(flatten)]
    pub conditions: ConditionsFile,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

#[derive(Debug, Deserialize)]
pub struct SessionFile {
    /// `"memory"` (one process) or `"redis"` (several replicas). Default memory.
    #[serde(default = "default_session_store")]
    pub store: String,
    /// How Redis is deployed when store = "redis": `"standalone"` (one URL), `"sentinel"` (a
    /// master found through sentinels) or `"cluster"` (Redis Cluster). Default standalone.
    #[serde(default = "default_redis_mode")]
    pub redis_mode: String,
    /// Redis URL when store = "redis" and redis_mode = "standalone"; may be a `${ENV}` reference
    /// (it can hold a password).
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Sentinel mode: the sentinels' URLs (`redis://[user:password@]host:26379`). Cluster mode:
    /// seed nodes (`redis://[user:password@]host:6379`). `${ENV}` references allowed. Default none.
    #[serde(default)]
    pub redis_nodes: Vec<String>,
    /// Sentinel mode: the master name the sentinels monitor. Required there.
    #[serde(default)]
    pub redis_sentinel_master: Option<String>,
    /// Sentinel mode: ACL user for the master (the sentinels' own user is in their URLs).
    /// Default none (the `default` user).
    #[serde(default)]
    pub redis_username: Option<String>,
    /// Sentinel mode: password for the master, usually a `${ENV}` reference. Default none.
    #[serde(default)]
    pub redis_password: Option<String>,
    /// PEM file of the CA (or CAs) that signed the Redis server's certificate, for `rediss://`
    /// with a private CA. Default: none, the system's trust store (OS roots) is used.
    #[serde(default)]
    pub redis_ca_file: Option<String>,
    /// Sign the user out after this long without a request. Default 30m.
    #[serde(default = "default_idle")]
    pub idle_timeout: String,
    /// Sign the user out this long after sign-in, whatever they do. Default 12h.
    #[serde(default = "default_absolute")]
    pub absolute_timeout: String,
    /// Cookie name. Default `storegate_session`.
    #[serde(default = "default_cookie")]
    pub cookie_name: String,
    /// The cookie's `Domain` (`example.com`), so the browser also sends it to the tools the
    /// built-in proxy or a front door serves on sibling hosts (`orders.example.com`). Must be
    /// `public_url`'s host or a parent of it. Default none: the cookie is `public_url`'s host's only.
    #[serde(default)]
    pub cookie_domain: Option<String>,
}

impl Default for SessionFile {
    fn default() -> Self {
        SessionFile {
            store: default_session_store(),
            redis_mode: default_redis_mode(),
            redis_url: None,
            redis_nodes: Vec::new(),
            redis_sentinel_master: None,
            redis_username: None,
            redis_password: None,
            redis_ca_file: None,
            idle_timeout: default_idle(),
            absolute_timeout: default_absolute(),
            cookie_name: default_cookie(),
            cookie_domain: None,
        }
    }
}

fn default_session_store() -> String {
    "memory".into()
}
fn default_redis_mode() -> String {
    "standalone".into()
}
fn default_idle() -> String {
    "30m".into()
}
fn default_absolute() -> String {
    "12h".into()
}
fn default_cookie() -> String {
    "storegate_session".into()
}

#[derive(Debug, Deserialize)]
pub struct AuditFile {
    /// JSON-lines file for audit events; `"-"` writes them to stdout. Default `-`.
    #[serde(default = "default_audit_file")]
    pub file: String,
    /// Seal every event into a SHA-256 hash chain (`seq`, `writer`, `prev`, `hash`). Default true.
    #[serde(default)]
    pub chain: Option<bool>,
    /// This writer's id in the chain. Default: the host name (stdout: host name and process id).
    #[serde(default)]
    pub writer_id: Option<String>,
    /// Rotate the file before it would pass this size (`"100MiB"`, `"500MB"`, bytes). Default none.
    #[serde(default)]
    pub rotate_size: Option<String>,
    /// Rotate the file once it has been written to for this long (`"1d"`). Default none.
    #[serde(default)]
    pub rotate_every: Option<String>,
    /// A PostgreSQL URL (`postgres://user:pass@host/db`, usually `"${STOREGATE_AUDIT_DB}"`):
    /// every chained event also goes to its append-only `audit_events` table. Needs `chain`.
    /// Default none.
    #[serde(default)]
    pub postgres_url: Option<String>,
    /// Where events wait while the database is away. Default `FILE.pgspool` (stdout:
    /// `storegate-audit.pgspool`).
    #[serde(default)]
    pub spool_file: Option<String>,
    /// The spool's size limit (`"64MiB"`); events beyond it are dropped and counted. Default 64 MiB.
    #[serde(default)]
    pub spool_max: Option<String>,
}

impl Default for AuditFile {
    fn default() -> Self {
        AuditFile {
            file: default_audit_file(),
            chain: None,
            writer_id: None,
            rotate_size: None,
            rotate_every: None,
            postgres_url: None,
            spool_file: None,
            spool_max: None,
        }
    }
}

fn default_audit_file() -> String {
    "-".into()
}

#[derive(Debug, Deserialize)]
pub struct IdpFile {
    pub id: String,
    /// Shown on the sign-in chooser. Default: the id.
    #[serde(default)]
    pub display_name: Option<String>,
    /// `"oidc"` or `"saml"`.
    pub protocol: String,
    /// OIDC issuer; discovery is `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// Client secret: a literal, or better a `${ENV}` reference.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Path of a file holding the client secret (alternative to client_secret).
    #[serde(default)]
    pub client_secret_file: Option<String>,
    /// `"client_secret_basic"` (default) or `"client_secret_post"`.
    #[serde(default)]
    pub token_auth_method: Option<String>,
    /// Default `["openid", "email", "profile"]`.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Accepted ID-token signature algorithms. Default `["RS256"]`. Symmetric (HS*) and `none` are
    /// never accepted.
    #[serde(default)]
    pub id_token_algs: Option<Vec<String>>,
    /// Tolerated clock difference with the IdP for exp/iat. Default 60s.
    #[serde(default)]
    pub clock_skew: Option<String>,
    /// Fetch and merge userinfo claims (its `sub` must match). Default true: Access Manager releases
    /// many attributes only there.
    #[serde(default)]
    pub userinfo: Option<bool>,
    /// RP-initiated logout endpoint for an IdP whose discovery document advertises no
    /// `end_session_endpoint` (Access Manager: `https://{host}/nidp/oauth/v1/nam/end_session`).
    /// Default: the advertised one; without either, sign-out ends only the local session.
    #[serde(default)]
    pub end_session_url: Option<String>,
    #[serde(default)]
    pub claims: ClaimsFile,
    /// This IdP's directory owns the email addresses it releases (Access Manager over the
    /// company directory): its emails count as verified, so they may adopt an existing
    /// BigCommerce customer and match `email_domains`. Default false: OIDC needs
    /// `email_verified: true` per sign-in, and SAML (no such claim) never vouches.
    #[serde(default)]
    pub trust_email: bool,

    // --- SAML (`protocol = "saml"`) ---
    /// The IdP's SAML metadata document (path relative to the config file). Its signing
    /// certificates are the only keys a response may be signed with.
    #[serde(default)]
    pub metadata_file: Option<String>,
    /// The IdP's metadata URL (Access Manager: `https://{host}/nidp/saml2/metadata`).
    #[serde(default)]
    pub metadata_url: Option<String>,
    /// How often metadata_url is fetched again. Default 1h.
    #[serde(default)]
    pub metadata_refresh: Option<String>,
    /// DANGER: accept RSA-SHA1 signatures and SHA-1 digests. Default false.
    #[serde(default)]
    pub dangerous_allow_sha1: Option<bool>,
    /// The old name of `dangerous_allow_sha1`: still read, and `check` warns.
    #[serde(default)]
    pub allow_sha1: Option<bool>,
    /// DANGER: accept IdP-initiated (unsolicited) responses, which carry no request id. Default false.
    #[serde(default)]
    pub allow_unsolicited: bool,
    /// NameID format asked for in the AuthnRequest. Default: none (the IdP's choice).
    #[serde(default)]
    pub nameid_format: Option<String>,
    /// SAML step-up: how the IdP is asked to compare the class a grant's `require_acr` names
    /// (`<RequestedAuthnContext Comparison=...>`), and how the assertion's AuthnContextClassRef is
    /// checked: `"exact"` (default) or `"minimum"`.
    #[serde(default)]
    pub authn_context_comparison: Option<String>,
    /// With `"minimum"`: the authentication context classes from weakest to strongest. A class
    /// satisfies a requested one listed before it; a requested class not listed is satisfied
    /// only by itself. Required with `"minimum"`, refused with `"exact"`.
    #[serde(default)]
    pub authn_context_order: Option<Vec<String>>,
    /// A PEM certificate that must have signed the metadata fetched from `metadata_url` (as
    /// Shibboleth's signature metadata filter does); unsigned metadata is then refused. Default
    /// none (the metadata is trusted for the https connection it came over).
    #[serde(default)]
    pub metadata_signing_cert: Option<String>,
    /// Which SAML attribute holds what; same keys as `[idp.claims]`.
    #[serde(default)]
    pub attributes: Option<ClaimsFile>,
}

/// `[saml]`: this gateway as a SAML service provider.
#[derive(Debug, Deserialize)]
pub struct SamlSpFile {
    /// Default `{public_url}/saml/metadata`.
    #[serde(default)]
    pub entity_id: Option<String>,
    /// PEM private key (RSA) that signs requests and metadata (and would decrypt assertions: encrypted assertions are not
    /// supported yet). Required.
    pub key_file: String,
    /// PEM certificate of that key, published in the metadata. Required.
    pub cert_file: String,
    /// Sign the SP metadata. Default true.
    #[serde(default = "yes")]
    pub sign_metadata: bool,
    /// Sign AuthnRequests (HTTP-Redirect binding, RSA-SHA256). Default true.
    #[serde(default = "yes")]
    pub sign_authn_requests: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
pub struct ClaimsFile {
    /// Default `email`. Access Manager often releases the raw LDAP name `mail`.
    #[serde(default)]
    pub email: Option<String>,
    /// Default `given_name` (LDAP: `givenName`).
    #[serde(default)]
    pub given_name: Option<String>,
    /// Default `family_name` (LDAP: `sn`).
    #[serde(default)]
    pub family_name: Option<String>,
    /// Default `name`.
    #[serde(default)]
    pub name: Option<String>,
    /// Default `groups`.
    #[serde(default)]
    pub groups: Option<String>,
    /// Default `roles`.
    #[serde(default)]
    pub roles: Option<String>,
    /// Reduce DN group values (`cn=bc-merch,ou=groups,o=corp`) to their first value (`bc-merch`).
    /// Default false.
    #[serde(default)]
    pub group_dn_to_name: bool,
}

#[derive(Debug, Deserialize)]
pub struct BigCommerceFile {
    pub id: String,
    pub store_hash: String,
    /// Default `https://api.bigcommerce.com`.
    #[serde(default)]
    pub api_base: Option<String>,
    /// Management API token (X-Auth-Token): scopes customers, customers login, information.
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub access_token_file: Option<String>,
    /// Client id of the API account whose secret signs Customer Login JWTs (the `iss`).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<String>,
    /// Timeout for every API call. Default 10s.
    #[serde(default)]
    pub timeout: Option<String>,
    /// B2B Edition API token (X-Auth-Token), when the store runs B2B Edition and grants give a
    /// company role. Default none (B2B grants on this account's stores are then refused by check).
    #[serde(default)]
    pub b2b_access_token: Option<String>,
    #[serde(default)]
    pub b2b_access_token_file: Option<String>,
    /// Default `https://api-b2b.bigcommerce.com/api/v3/io`.
    #[serde(default)]
    pub b2b_api_base: Option<String>,
    /// The shared secret of this account's webhooks: `storegate webhooks sync` registers it as
    /// the hooks' `X-Storegate-Hook-Secret` header, and `POST /webhooks/bigcommerce/{id}` refuses
    /// a delivery without it. At least 24 characters. Default none (no webhooks: the receiver
    /// answers 404 for this account).
    #[serde(default)]
    pub webhook_secret: Option<String>,
    #[serde(default)]
    pub webhook_secret_file: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct StoreFile {
    pub id: String,
    pub name: String,
    /// The `[[bigcommerce]]` account (store hash) this storefront belongs to.
    pub bigcommerce: String,
    /// Multi-Storefront channel. Default 1.
    #[serde(default = "default_channel")]
    pub channel_id: u64,
    /// Storefront base URL; the browser is sent to `{url}/login/token/{jwt}`.
    pub url: String,
    /// Shown on the tile.
    #[serde(default)]
    pub description: Option<String>,
    /// Where a launch without `to` lands. Default `/account.php`.
    #[serde(default)]
    pub default_path: Option<String>,
    /// Send `request_ip` in the login token, binding it to the browser's address. Default false
    /// (breaks users behind changing egress IPs).
    #[serde(default)]
    pub bind_request_ip: bool,
    /// Region, brand, business unit...: rules select stores by tag (`store_tags`). Default none.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The `[[template]]` whose role mappings shape this store's grants. Default none.
    #[serde(default)]
    pub template: Option<String>,
    /// The portal tile's picture: an `https://` URL, or the path of an SVG file (relative to
    /// this file's folder) the gateway serves itself. Default none (the tile shows initials).
    #[serde(default)]
    pub logo: Option<String>,
}

/// A named set of role -> grant mappings stores and rules share.
#[derive(Debug, Deserialize)]
pub struct TemplateFile {
    pub name: String,
    /// Role name -> what that role gets (`[template.roles.merchandiser]`).
    #[serde(default)]
    pub roles: BTreeMap<String, GrantFile>,
}

/// What a role gets on a store. In a template: the role's settings; on a rule: overrides.
#[derive(Debug, Default, Deserialize)]
pub struct GrantFile {
    /// BigCommerce customer group (price lists): a name (created if missing) or a numeric id.
    #[serde(default)]
    pub customer_group: Option<String>,
    /// B2B Edition company membership. Default none.
    #[serde(default)]
    pub b2b: Option<B2bFile>,
    /// Storefront path prefixes a launch may open (`to`). Default: any path.
    #[serde(default)]
    pub allowed_paths: Option<Vec<String>>,
    /// Authentication contract (acr) the session must carry; a weaker session is sent back to the
    /// IdP with `acr_values` (step-up). Default none.
    #[serde(default)]
    pub require_acr: Option<String>,
    /// Launch only this soon after authenticating, e.g. "8h" (partners, agencies). Default none.
    #[serde(default)]
    pub max_session_age: Option<String>,
    /// The `[[permission_set]]` this role is expected to hold in the store's control panel.
    /// Default none (storefront only).
    #[serde(default)]
    pub control_panel: Option<String>,
}

/// `b2b = { company_id = 42, role = "junior_buyer" }` or `{ company_id = 42, company_role_id = 7 }`.
#[derive(Debug, Deserialize)]
pub struct B2bFile {
    pub company_id: u64,
    /// `"admin"`, `"senior_buyer"` or `"junior_buyer"` (B2B Edition roles 0, 1, 2).
    #[serde(default)]
    pub role: Option<String>,
    /// A custom company role (`companyRoleId`), instead of `role`.
    #[serde(default)]
    pub company_role_id: Option<u64>,
}

fn default_channel() -> u64 {
    1
}

#[derive(Debug, Deserialize)]
pub struct RuleFile {
    pub name: String,
    /// `"allow"` (default) or `"deny"`. A deny that matches wins over every allow.
    #[serde(default)]
    pub effect: Option<String>,
    /// Who the rule matches; see [`ConditionsFile`].
    #[serde(flatten)]
    pub conditions: ConditionsFile,
    /// Store ids, or `"*"` for every store. Default none (then `store_tags` is needed).
    #[serde(default)]
    pub stores: Vec<String>,
    /// Every store carrying one of these tags is covered too. Default none.
    #[serde(default)]
    pub store_tags: Vec<String>,
    /// The template whose entry for `role` shapes the grant. Default: the store's template.
    #[serde(default)]
    pub template: Option<String>,
    /// Role shown on the tile and recorded in audit events. Required for allow rules.
    #[serde(default)]
    pub role: Option<String>,
    // Grant settings that override the template's (allow rules only); see [`GrantFile`].
    #[serde(default)]
    pub customer_group: Option<String>,
    #[serde(default)]
    pub b2b: Option<B2bFile>,
    #[serde(default)]
    pub allowed_paths: Option<Vec<String>>,
    #[serde(default)]
    pub require_acr: Option<String>,
    #[serde(default)]
    pub max_session_age: Option<String>,
    #[serde(default)]
    pub control_panel: Option<String>,
    /// Rule validity window, RFC 3339 (`2026-12-01T00:00:00Z`).
    #[serde(default)]
    pub not_before: Option<String>,
    #[serde(default)]
    pub not_after: Option<String>,
    /// An IdP claim/attribute holding the end of this access (RFC 3339, `YYYYMMDDHHMMSSZ`, or Unix
    /// time). An identity without a readable value gets nothing from this rule. Default none.
    #[serde(default)]
    pub expires_claim: Option<String>,
}
