//! Configuration loading: a complete file that loads, then one test per class of problem, each
//! asserting the exact `FILE:LINE: message` an operator would read.
//!
//! Texts are written inline so that the line numbers in the assertions can be checked by eye: the
//! [`doc`] helper drops the newline after `r#"`, so the first line of the literal is line 1.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    AuditTarget, ClaimMapping, Config, Environment, Logo, Protocol, RedisTopology, SessionBackend,
    TokenAuthMethod, load_str,
};
use crate::identity::StoreId;
use crate::policy::{CustomerGroupRef, Effect, StoreSelector};

const FILE: &str = "storegate.toml";

/// An environment with only the variables and files a test gives it.
#[derive(Default)]
struct FakeEnv {
    vars: HashMap<String, String>,
    files: HashMap<PathBuf, String>,
}

impl FakeEnv {
    fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }
    fn file(mut self, path: &str, contents: &str) -> Self {
        self.files.insert(path.into(), contents.into());
        self
    }
    fn without_var(mut self, name: &str) -> Self {
        self.vars.remove(name);
        self
    }
    fn without_file(mut self, path: &str) -> Self {
        self.files.remove(Path::new(path));
        self
    }
}

impl Environment for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
    fn read_file(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
    }
}

/// The environment [`BASELINE`] needs.
fn baseline_env() -> FakeEnv {
    FakeEnv::default()
        .var("REDIS_PASSWORD", "hunter2")
        .var("AM_CLIENT_SECRET", "am-secret")
        .var("BC_TOKEN", "bc-token")
        .file("secrets/partners", "partners-secret\n")
        .file("secrets/bc", "  bc-client-secret  \n")
}

/// Drops the newline that follows `r#"`, so line 1 is the literal's first line.
fn doc(text: &str) -> &str {
    text.strip_prefix('\n').unwrap_or(text)
}

fn load_with(text: &str, env: &FakeEnv) -> Result<Config, String> {
    load_str(doc(text), FILE, env).map_err(|d| d.to_string())
}

/// The rendered diagnostics of a text that must not load.
fn errors_with(text: &str, env: &FakeEnv) -> String {
    match load_with(text, env) {
        Ok(_) => panic!("expected diagnostics, but the configuration loaded"),
        Err(e) => e,
    }
}

fn errors(text: &str) -> String {
    errors_with(text, &FakeEnv::default())
}

/// The rendered diagnostics as `(line, message)` pairs, for long messages checked by substring.
fn parsed(rendered: &str) -> Vec<(usize, String)> {
    rendered
        .lines()
        .map(|l| {
            let rest = l.strip_prefix(&format!("{FILE}:")).expect("FILE: prefix");
            let (line, message) = rest.split_once(": ").expect("LINE: message");
            (line.parse().expect("a line number"), message.to_owned())
        })
        .collect()
}

/// Asserts exactly one diagnostic, on `line`, whose message contains `needle`.
fn assert_one(rendered: &str, line: usize, needle: &str) {
    let items = parsed(rendered);
    assert_eq!(items.len(), 1, "expected one diagnostic, got:\n{rendered}");
    assert_eq!(items[0].0, line, "wrong line in:\n{rendered}");
    assert!(
        items[0].1.contains(needle),
        "`{needle}` not in:\n{rendered}"
    );
}

/// A complete configuration using every table, secrets from the environment and from files.
const BASELINE: &str = r#"
public_url = "https://sso.example.com/"
listen = "0.0.0.0:8443"
support_contact = "it@example.com"

[session]
store = "redis"
redis_url = "redis://:${REDIS_PASSWORD}@redis:6379/0"

[audit]
file = "/var/log/storegate/audit.jsonl"

[[idp]]
id = "am"
display_name = "Corporate sign-in"
protocol = "oidc"
issuer = "https://am.example.com/nidp/oauth/nam"
client_id = "storegate"
client_secret = "${AM_CLIENT_SECRET}"

[idp.claims]
email = "mail"
given_name = "givenName"
family_name = "sn"
group_dn_to_name = true

[[idp]]
id = "partners"
protocol = "oidc"
issuer = "https://partners.example.com"
client_id = "sg-partners"
client_secret_file = "secrets/partners"
token_auth_method = "client_secret_post"
id_token_algs = ["ES256", "RS256"]
clock_skew = "2m"
userinfo = false

[[bigcommerce]]
id = "main"
store_hash = "abc123"
access_token = "${BC_TOKEN}"
client_id = "bc-client"
client_secret_file = "secrets/bc"

[[store]]
id = "retail"
name = "Retail"
bigcommerce = "main"
url = "https://shop.example.com"

[[store]]
id = "wholesale"
name = "Wholesale"
bigcommerce = "main"
channel_id = 2
url = "https://wholesale.example.com"
default_path = "/wholesale/"
bind_request_ip = true

[[rule]]
name = "contractors-never"
effect = "deny"
groups_any = ["contractors"]
stores = ["*"]

[[rule]]
name = "merch"
groups_any = ["bc-merch"]
email_domains = ["Example.COM"]
idps = ["am"]
attributes = { department = ["sales", "marketing"] }
stores = ["retail", "wholesale"]
role = "merchandiser"
customer_group = "Staff"
not_before = "2026-01-01T00:00:00Z"
not_after = "2027-01-01T00:00:00Z"

[[rule]]
name = "partners"
idps = ["partners"]
stores = ["wholesale"]
role = "buyer"
customer_group = "42"
"#;

/// The smallest configuration that loads: one IdP, nothing else.
const MINIMAL: &str = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"
"#;

// ---------------------------------------------------------------------------------------------
// What loads
// ---------------------------------------------------------------------------------------------

#[test]
fn baseline_loads_with_every_value_resolved() {
    let c = load_with(BASELINE, &baseline_env()).unwrap();

    assert_eq!(c.public_url.as_str(), "https://sso.example.com/");
    assert_eq!(c.base_url(), "https://sso.example.com");
    assert_eq!(c.listen.to_string(), "0.0.0.0:8443");
    assert!(!c.allow_insecure_http);
    assert_eq!(c.support_contact, "it@example.com");

    match &c.session.backend {
        SessionBackend::Redis(RedisTopology::Standalone { url }) => {
            assert_eq!(url.expose(), "redis://:hunter2@redis:6379/0")
        }
        other => panic!("expected redis, got {other:?}"),
    }
    assert_eq!(c.session.idle_timeout, Duration::from_secs(30 * 60));
    assert_eq!(c.session.absolute_timeout, Duration::from_secs(12 * 3600));
    assert_eq!(c.session.cookie_name, "storegate_session");
    assert_eq!(
        c.audit,
        AuditTarget::File("/var/log/storegate/audit.jsonl".into())
    );

    assert_eq!(c.idps.len(), 2);
    let am = c.idp("am").unwrap();
    assert_eq!(am.display_name, "Corporate sign-in");
    assert_eq!(
        am.redirect_uri(&c.public_url),
        "https://sso.example.com/oidc/am/callback"
    );
    assert_eq!(
        am.claims,
        ClaimMapping {
            email: "mail".into(),
            given_name: "givenName".into(),
            family_name: "sn".into(),
            group_dn_to_name: true,
            ..ClaimMapping::default()
        }
    );
    let Protocol::Oidc(oidc) = &am.protocol else {
        panic!("expected an OIDC IdP")
    };
    assert_eq!(oidc.issuer, "https://am.example.com/nidp/oauth/nam");
    assert_eq!(oidc.client_id, "storegate");
    assert_eq!(oidc.client_secret.as_ref().unwrap().expose(), "am-secret");
    assert_eq!(oidc.auth_method, TokenAuthMethod::ClientSecretBasic);
    assert_eq!(oidc.scopes, ["openid", "email", "profile"]);
    assert_eq!(oidc.id_token_algs, ["RS256"]);
    assert_eq!(oidc.clock_skew, Duration::from_secs(60));
    assert!(oidc.userinfo);

    let partners = c.idp("partners").unwrap();
    assert_eq!(
        partners.display_name, "partners",
        "display_name defaults to the id"
    );
    assert_eq!(partners.claims, ClaimMapping::default());
    let Protocol::Oidc(oidc) = &partners.protocol else {
        panic!("expected an OIDC IdP")
    };
    assert_eq!(
        oidc.client_secret.as_ref().unwrap().expose(),
        "partners-secret",
        "a secret file is read and trimmed"
    );
    assert_eq!(oidc.auth_method, TokenAuthMethod::ClientSecretPost);
    assert_eq!(oidc.id_token_algs, ["ES256", "RS256"]);
    assert_eq!(oidc.clock_skew, Duration::from_secs(120));
    assert!(!oidc.userinfo);

    let bc = c.account("main").unwrap();
    assert_eq!(bc.store_hash, "abc123");
    assert_eq!(bc.api_base.as_str(), "https://api.bigcommerce.com/");
    assert_eq!(bc.access_token.expose(), "bc-token");
    assert_eq!(bc.client_id, "bc-client");
    assert_eq!(bc.client_secret.expose(), "bc-client-secret");
    assert_eq!(bc.timeout, Duration::from_secs(10));

    let ids: Vec<&str> = c.stores.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["retail", "wholesale"]);
    let retail = &c.stores[0];
    assert_eq!(retail.account, "main");
    assert_eq!(retail.channel_id, 1, "channel_id defaults to 1");
    assert_eq!(retail.default_path.as_str(), "/account.php");
    assert!(!retail.bind_request_ip);
    assert_eq!(retail.description, None);
    let wholesale = &c.stores[1];
    assert_eq!(wholesale.channel_id, 2);
    assert_eq!(wholesale.url.as_str(), "https://wholesale.example.com/");
    assert_eq!(wholesale.default_path.as_str(), "/wholesale/");
    assert!(wholesale.bind_request_ip);

    let policy_stores: Vec<&str> = c.policy.store_ids().map(|s| s.as_str()).collect();
    assert_eq!(
        policy_stores,
        ["retail", "wholesale"],
        "policy stores keep file order"
    );
    let names: Vec<&str> = c.policy.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["contractors-never", "merch", "partners"],
        "rules keep file order"
    );

    let deny = &c.policy.rules()[0];
    assert_eq!(deny.effect, Effect::Deny);
    assert_eq!(deny.stores, StoreSelector::All);
    assert_eq!(deny.role, "");

    let merch = &c.policy.rules()[1];
    assert_eq!(merch.effect, Effect::Allow, "effect defaults to allow");
    assert_eq!(merch.conditions.groups_any, ["bc-merch"]);
    assert_eq!(
        merch.conditions.email_domains,
        ["example.com"],
        "domains are lower-cased"
    );
    assert_eq!(merch.conditions.idps, ["am"]);
    assert_eq!(
        merch.conditions.attributes["department"],
        ["sales", "marketing"]
    );
    let merch_stores = match &merch.stores {
        StoreSelector::Only(s) => s.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        StoreSelector::All => panic!("expected a list"),
    };
    assert_eq!(merch_stores, ["retail", "wholesale"]);
    assert_eq!(merch.role, "merchandiser");
    assert_eq!(
        merch.grant.customer_group,
        Some(CustomerGroupRef::Name("Staff".into()))
    );
    assert_eq!(merch.not_before, Some(1_767_225_600)); // 2026-01-01T00:00:00Z
    assert_eq!(merch.not_after, Some(1_798_761_600)); // 2027-01-01T00:00:00Z

    let partners = &c.policy.rules()[2];
    assert_eq!(
        partners.grant.customer_group,
        Some(CustomerGroupRef::Id(42))
    );
    assert_eq!(partners.not_before, None);
    assert_eq!(partners.not_after, None);
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = load_with(MINIMAL, &FakeEnv::default()).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.support_contact, "your IT service desk");
    assert!(matches!(c.session.backend, SessionBackend::Memory));
    assert_eq!(c.session.idle_timeout, Duration::from_secs(30 * 60));
    assert_eq!(c.session.absolute_timeout, Duration::from_secs(12 * 3600));
    assert_eq!(c.audit, AuditTarget::Stdout);
    let Protocol::Oidc(oidc) = &c.idps[0].protocol else {
        panic!("expected an OIDC IdP")
    };
    assert!(
        oidc.client_secret.is_none(),
        "an IdP client secret is optional"
    );
    assert!(c.stores.is_empty());
    assert!(c.policy.rules().is_empty());
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let c = load_with(BASELINE, &baseline_env()).unwrap();
    let debug = format!("{c:?}");
    for secret in [
        "hunter2",
        "am-secret",
        "partners-secret",
        "bc-token",
        "bc-client-secret",
    ] {
        assert!(!debug.contains(secret), "{secret} leaked into {debug}");
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown keys
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_top_level_key_is_reported_with_its_line() {
    let text = r#"
public_url = "https://sso.example.com"
lisen = "0.0.0.0:8080"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"
"#;
    assert_eq!(errors(text), "storegate.toml:2: unknown key `lisen`\n");
}

#[test]
fn unknown_top_level_table_is_reported_at_its_header() {
    let text = r#"
public_url = "https://sso.example.com"

[sesion]
store = "redis"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"
"#;
    assert_eq!(errors(text), "storegate.toml:3: unknown key `sesion`\n");
}

#[test]
fn unknown_key_in_idp_claims_table_is_reported_with_its_line() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[idp.claims]
email = "mail"
mial = "mail"
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:11: unknown key `idp[0].claims.mial`\n"
    );
}

#[test]
fn unknown_key_in_second_array_of_tables_entry_points_at_that_entry() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[idp]]
id = "partners"
protocol = "oidc"
issuer = "https://partners.example.com"
client_id = "storegate"
client_sercet = "x"

[idp.claims]
groups = "memberOf"
group_dn_to_nam = true
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:14: unknown key `idp[1].client_sercet`\n\
         storegate.toml:18: unknown key `idp[1].claims.group_dn_to_nam`\n"
    );
}

#[test]
fn unknown_key_in_inline_table_is_reported_with_its_line() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"
client_secret = "s"
claims = { email = "mail", groupz = "memberOf" }
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:9: unknown key `idp[0].claims.groupz`\n"
    );
}

#[test]
fn unknown_key_as_dotted_key_is_reported_with_its_line() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"
claims.email = "mail"
claims.grups = "memberOf"
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:9: unknown key `idp[0].claims.grups`\n"
    );
}

/// `[[rule]]`, `[[route]]` and `[admin]` embed their conditions with `#[serde(flatten)]`, which
/// `serde_ignored` cannot see through: their unknown keys are still reported, each on its line.
const SHARED_CONDITIONS: &str = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[store]]
id = "s"
name = "S"
bigcommerce = "main"
url = "https://s.example.com"

[[bigcommerce]]
id = "main"
store_hash = "abc"
access_token = "t"
client_id = "c"
client_secret = "s"

[[rule]]
name = "staff"
groups_any = ["staff"]
stores = ["*"]
role = "buyer"
"#;

#[test]
fn unknown_keys_next_to_shared_conditions_are_reported_with_their_lines() {
    let base = doc(SHARED_CONDITIONS).lines().count();
    let text = format!(
        "{SHARED_CONDITIONS}grups_any = [\"x\"]\n\
         \n\
         [[route]]\n\
         name = \"desk\"\n\
         host = \"desk.example.com\"\n\
         roles_anyy = [\"x\"]\n\
         \n\
         [admin]\n\
         groups_any = [\"admins\"]\n\
         [admin.atributes]\n\
         dept = \"it\"\n"
    );
    assert_eq!(
        errors(&text),
        format!(
            "storegate.toml:{}: unknown key `rule[0].grups_any`\n\
             storegate.toml:{}: unknown key `route[0].roles_anyy`\n\
             storegate.toml:{}: unknown key `admin.atributes`\n",
            base + 1,
            base + 6,
            base + 10,
        )
    );
}

#[test]
fn rule_route_and_admin_conditions_are_built_alike() {
    let conditions = "groups_any = [\"Staff\"]\n\
                      roles_any = [\"buyer\"]\n\
                      email_domains = [\"Example.COM\"]\n\
                      idps = [\"am\"]\n\
                      attributes = { dept = \"sales\", site = [\"a\", \"b\"] }\n\
                      attribute_regex = { title = \"(?i)manager.*\" }\n\
                      acr_any = [\"urn:mfa\"]\n\
                      amr_any = [\"otp\"]\n";
    let text = format!(
        "{}\n[[route]]\nname = \"desk\"\nhost = \"desk.example.com\"\n{conditions}\n[admin]\n{conditions}",
        SHARED_CONDITIONS.replace("groups_any = [\"staff\"]\n", conditions)
    );
    let cfg = load_with(&text, &FakeEnv::default()).expect("loads");
    let rule = &cfg.policy.rules()[0].conditions;
    let route = &cfg.forward_auth.routes.routes()[0].conditions;
    let admin = &cfg.admin.expect("[admin] kept").conditions;
    assert_eq!(rule, route);
    assert_eq!(rule, admin);
    assert_eq!(rule.email_domains, vec!["example.com"]);
    assert_eq!(rule.attributes["site"], vec!["a", "b"]);
    assert_eq!(rule.attribute_regex.len(), 1);
}

#[test]
fn a_bad_regex_or_an_empty_attribute_is_refused_in_every_table() {
    let base = doc(SHARED_CONDITIONS).lines().count();
    let text = format!(
        "{SHARED_CONDITIONS}attribute_regex = {{ title = \"(\" }}\n\
         \n\
         [[route]]\n\
         name = \"desk\"\n\
         host = \"desk.example.com\"\n\
         attribute_regex = {{ title = \"(\" }}\n\
         \n\
         [admin]\n\
         attributes = {{ dept = [] }}\n"
    );
    let got = errors(&text);
    let items = parsed(&got);
    assert_eq!(items.len(), 3, "{got}");
    assert_eq!(items[0].0, base + 1);
    assert!(
        items[0]
            .1
            .starts_with("rule \"staff\": `attribute_regex.title` is not a valid regex"),
        "{got}"
    );
    assert_eq!(items[1].0, base + 6);
    assert!(
        items[1]
            .1
            .starts_with("route \"desk\": `attribute_regex.title` is not a valid regex"),
        "{got}"
    );
    assert_eq!(
        items[2],
        (
            base + 9,
            "`admin.attributes.dept` lists no value, so it can never match".to_owned()
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_env_secret_names_the_variable_and_line() {
    let env = baseline_env().without_var("BC_TOKEN");
    assert_eq!(
        errors_with(BASELINE, &env),
        "storegate.toml:40: `bigcommerce[0].access_token` refers to the environment variable BC_TOKEN, which is not set\n"
    );
}

#[test]
fn missing_env_in_redis_url_is_reported() {
    let env = baseline_env().without_var("REDIS_PASSWORD");
    assert_eq!(
        errors_with(BASELINE, &env),
        "storegate.toml:7: `session.redis_url` refers to the environment variable REDIS_PASSWORD, which is not set\n"
    );
}

#[test]
fn secret_and_secret_file_both_set_is_reported_at_the_file_key() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"
client_secret = "literal"
client_secret_file = "secrets/am"
"#;
    let env = FakeEnv::default().file("secrets/am", "from-file");
    assert_eq!(
        errors_with(text, &env),
        "storegate.toml:9: set either `client_secret` or `client_secret_file`, not both\n"
    );
}

#[test]
fn unreadable_secret_file_is_reported_with_path_and_cause() {
    let env = baseline_env().without_file("secrets/bc");
    assert_eq!(
        errors_with(BASELINE, &env),
        "storegate.toml:42: cannot read the secret file secrets/bc: No such file or directory\n"
    );
}

#[test]
fn empty_secret_file_is_reported() {
    let env = baseline_env().file("secrets/bc", " \n");
    assert_eq!(
        errors_with(BASELINE, &env),
        "storegate.toml:42: the secret file secrets/bc is empty\n"
    );
}

#[test]
fn missing_required_secret_is_reported_at_its_table() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[bigcommerce]]
id = "main"
store_hash = "abc123"
access_token = "t"
client_id = "bc"
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:9: `bigcommerce[0]` needs `client_secret` (or `client_secret_file`)\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Duplicates and references
// ---------------------------------------------------------------------------------------------

#[test]
fn duplicate_ids_are_reported_at_the_second_occurrence() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am2.example.com"
client_id = "storegate"

[[bigcommerce]]
id = "main"
store_hash = "abc123"
access_token = "t"
client_id = "bc"
client_secret = "s"

[[bigcommerce]]
id = "main"
store_hash = "def456"
access_token = "t"
client_id = "bc"
client_secret = "s"

[[store]]
id = "retail"
name = "Retail"
bigcommerce = "main"
url = "https://shop.example.com"

[[store]]
id = "retail"
name = "Retail again"
bigcommerce = "main"
url = "https://shop2.example.com"
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:10: duplicate [[idp]] id \"am\"\n\
         storegate.toml:23: duplicate [[bigcommerce]] id \"main\"\n\
         storegate.toml:36: duplicate [[store]] id \"retail\"\n"
    );
}

#[test]
fn duplicate_rule_name_is_reported_at_the_second_rule() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[rule]]
name = "everyone"
effect = "deny"
stores = ["*"]

[[rule]]
name = "everyone"
effect = "deny"
stores = ["*"]
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:15: duplicate [[rule]] name \"everyone\"\n"
    );
}

#[test]
fn rule_naming_unknown_store_is_reported_at_its_stores_line() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[rule]]
name = "merch"
stores = ["retail"]
role = "merchandiser"
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:11: rule \"merch\" names store \"retail\", which is not configured\n"
    );
}

#[test]
fn rule_naming_unknown_idp_is_reported_at_its_idps_line() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[rule]]
name = "partners"
effect = "deny"
idps = ["am", "partners"]
stores = ["*"]
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:12: rule \"partners\" names idp \"partners\", which is not configured\n"
    );
}

#[test]
fn store_naming_unknown_bigcommerce_account_is_reported() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[store]]
id = "retail"
name = "Retail"
bigcommerce = "mian"
url = "https://shop.example.com"
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:12: [[store]] \"retail\" names bigcommerce account \"mian\", which is not configured\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Unsafe or impossible values
// ---------------------------------------------------------------------------------------------

const HTTP_PUBLIC_URL: &str = r#"
public_url = "http://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"
"#;

#[test]
fn http_public_url_is_refused_without_allow_insecure_http() {
    assert_eq!(
        errors(HTTP_PUBLIC_URL),
        "storegate.toml:1: `public_url` is http: session cookies would travel in clear text. Use https, or set `allow_insecure_http = true` for development only\n"
    );
}

#[test]
fn http_public_url_is_accepted_with_allow_insecure_http() {
    let text = format!("allow_insecure_http = true\n{}", doc(HTTP_PUBLIC_URL));
    let c = load_with(&text, &FakeEnv::default()).unwrap();
    assert!(c.allow_insecure_http);
    assert_eq!(c.public_url.scheme(), "http");
}

#[test]
fn bad_durations_are_reported_each_with_its_line() {
    let text = r#"
public_url = "https://sso.example.com"

[session]
idle_timeout = "soon"
absolute_timeout = "12 hours please"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"
clock_skew = "-5s"
"#;
    let items = parsed(&errors(text));
    let lines: Vec<usize> = items.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [4, 5, 12], "{items:?}");
    assert!(items[0].1.starts_with(
        "`session.idle_timeout`: \"soon\" is not a duration like \"30m\" or \"12h\" ("
    ));
    assert!(
        items[1]
            .1
            .starts_with("`session.absolute_timeout`: \"12 hours please\" is not a duration")
    );
    assert!(
        items[2]
            .1
            .starts_with("`idp[0].clock_skew`: \"-5s\" is not a duration")
    );
}

#[test]
fn bad_bigcommerce_timeout_is_reported() {
    let text = BASELINE.replace(
        "client_secret_file = \"secrets/bc\"",
        "client_secret_file = \"secrets/bc\"\ntimeout = \"ten seconds\"",
    );
    assert_one(
        &errors_with(&text, &baseline_env()),
        43,
        "`bigcommerce[0].timeout`: \"ten seconds\" is not a duration",
    );
}

#[test]
fn idle_timeout_longer_than_absolute_is_reported_at_session_table() {
    let text = r#"
public_url = "https://sso.example.com"

[session]
idle_timeout = "13h"
absolute_timeout = "12h"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:3: `session.idle_timeout` is longer than `session.absolute_timeout`\n"
    );
}

#[test]
fn bad_rfc3339_time_is_reported_at_its_line() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[rule]]
name = "winter-sale"
effect = "deny"
stores = ["*"]
not_before = "2026-12-01"
"#;
    assert_one(
        &errors(text),
        13,
        "`rule[0].not_before`: \"2026-12-01\" is not an RFC 3339 time like 2026-12-01T00:00:00Z",
    );
}

#[test]
fn window_that_can_never_match_is_reported_at_not_after() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[rule]]
name = "winter-sale"
effect = "deny"
stores = ["*"]
not_before = "2026-12-01T00:00:00Z"
not_after = "2026-12-01T00:00:00Z"
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:14: rule \"winter-sale\" can never match: not_after is not later than not_before\n"
    );
}

#[test]
fn unsupported_protocol_is_reported() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "wsfed"
issuer = "https://am.example.com"
client_id = "storegate"
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:5: [[idp]] \"am\": protocol \"wsfed\" is not supported (use \"oidc\" or \"saml\")\n"
    );
}

#[test]
fn symmetric_and_none_id_token_algs_are_refused() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"
id_token_algs = ["RS256", "HS256", "none"]
"#;
    let accepted = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";
    assert_eq!(
        errors(text),
        format!(
            "storegate.toml:8: `id_token_algs`: \"HS256\" is not accepted; use one of {accepted}\n\
             storegate.toml:8: `id_token_algs`: \"none\" is not accepted; use one of {accepted}\n"
        )
    );
}

#[test]
fn plain_http_issuer_off_loopback_is_refused() {
    let text = MINIMAL.replace("https://am.example.com", "http://am.example.com");
    assert_eq!(
        errors(&text),
        "storegate.toml:6: [[idp]] \"am\": the issuer must use https (plain http is allowed only on loopback, for tests)\n"
    );
}

#[test]
fn plain_http_issuer_on_loopback_is_accepted() {
    for issuer in [
        "http://127.0.0.1:9000",
        "http://localhost:9000/realm",
        "http://[::1]:9000",
    ] {
        let text = MINIMAL.replace("https://am.example.com", issuer);
        let c = load_with(&text, &FakeEnv::default())
            .unwrap_or_else(|e| panic!("{issuer} should load:\n{e}"));
        let Protocol::Oidc(oidc) = &c.idps[0].protocol else {
            panic!("expected an OIDC IdP")
        };
        assert_eq!(oidc.issuer, issuer);
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax and types
// ---------------------------------------------------------------------------------------------

#[test]
fn toml_syntax_error_is_reported_at_its_line() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc
issuer = "https://am.example.com"
"#;
    let items = parsed(&errors(text));
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].0, 5, "{items:?}");
}

#[test]
fn wrong_type_is_reported_at_the_value() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[store]]
id = "retail"
name = "Retail"
bigcommerce = "main"
channel_id = "x"
url = "https://shop.example.com"
"#;
    assert_one(
        &errors(text),
        13,
        "invalid type: string \"x\", expected u64",
    );
}

#[test]
fn missing_required_key_is_reported() {
    let text = MINIMAL.replace("public_url = \"https://sso.example.com\"\n", "\n");
    assert_one(&errors(&text), 1, "missing field `public_url`");
}

// ---------------------------------------------------------------------------------------------
// Many problems at once
// ---------------------------------------------------------------------------------------------

#[test]
fn every_problem_is_reported_sorted_by_line() {
    let text = r#"
public_url = "http://sso.example.com"
listen = "everywhere"

[session]
idle_timeout = "1h"
absolute_timeout = "30m"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"
id_token_algs = ["HS256"]

[[rule]]
name = "merch"
stores = ["retail"]
role = "merchandiser"

[[rule]]
name = "merch"
effect = "deny"
idps = ["partners"]
stores = ["*"]
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:1: `public_url` is http: session cookies would travel in clear text. Use https, or set `allow_insecure_http = true` for development only\n\
         storegate.toml:2: `listen`: \"everywhere\" is not an address like 127.0.0.1:8080\n\
         storegate.toml:4: `session.idle_timeout` is longer than `session.absolute_timeout`\n\
         storegate.toml:13: `id_token_algs`: \"HS256\" is not accepted; use one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA\n\
         storegate.toml:17: rule \"merch\" names store \"retail\", which is not configured\n\
         storegate.toml:21: duplicate [[rule]] name \"merch\"\n\
         storegate.toml:23: rule \"merch\" names idp \"partners\", which is not configured\n"
    );
}

#[test]
fn unknown_keys_and_a_type_error_are_reported_together_sorted_by_line() {
    // `[idp.claims]` after `[[store]]` still belongs to the last [[idp]], so the deserializer meets
    // the unknown claim key (line 15) before the wrong channel_id (line 12).
    let text = r#"
public_url = "https://sso.example.com"
lisen = "0.0.0.0:8080"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[store]]
id = "retail"
channel_id = "x"

[idp.claims]
mial = "mail"
"#;
    let items = parsed(&errors(text));
    let lines: Vec<usize> = items.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [2, 12, 15], "{items:?}");
    assert_eq!(items[0].1, "unknown key `lisen`");
    assert_eq!(items[2].1, "unknown key `idp[0].claims.mial`");
}

#[test]
fn missing_field_in_second_entry_is_reported_at_that_entry() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[idp]]
id = "partners"
issuer = "https://partners.example.com"
"#;
    assert_eq!(errors(text), "storegate.toml:9: missing field `protocol`\n");
}

#[test]
fn entries_of_an_inline_array_of_tables_have_their_own_lines() {
    let text = r#"
public_url = "https://sso.example.com"
idp = [
  { id = "am", protocol = "oidc", issuer = "https://am.example.com", client_id = "c" },
  { id = "am", protocol = "oidc", issuer = "https://am.example.com", client_id = "c", bogus = 1 },
]
"#;
    assert_eq!(
        errors(text),
        "storegate.toml:4: unknown key `idp[1].bogus`\n\
         storegate.toml:4: duplicate [[idp]] id \"am\"\n"
    );
}

#[test]
fn public_url_with_a_path_is_refused() {
    let text = MINIMAL.replace(
        "https://sso.example.com\"",
        "https://sso.example.com/storegate\"",
    );
    assert_one(&errors(&text), 1, "must be an origin without a path");
    // A trailing slash is the root, not a path.
    let root = MINIMAL.replace("https://sso.example.com\"", "https://sso.example.com/\"");
    assert!(load_with(&root, &FakeEnv::default()).is_ok());
}

// --- SAML (issue 3) ---

fn saml_env(signing_cert: bool) -> FakeEnv {
    let (key, cert) = crate::federation::saml::sp::generate_key_and_cert("sp").unwrap();
    let b64: String = cert.lines().filter(|l| !l.starts_with("-----")).collect();
    let kd = if signing_cert {
        format!(
            r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#
        )
    } else {
        String::new()
    };
    let md = format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://iam.example.com/nidp/saml2/metadata"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{kd}<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://iam.example.com/nidp/saml2/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
    );
    FakeEnv::default()
        .file("certs/sp.key", &key)
        .file("certs/sp.crt", &cert)
        .file("idp.xml", &md)
}

const SAML: &str = r#"
public_url = "https://sso.example.com"

[saml]
key_file = "certs/sp.key"
cert_file = "certs/sp.crt"

[[idp]]
id = "am-saml"
protocol = "saml"
metadata_file = "idp.xml"
[idp.attributes]
email = "mail"
"#;

#[test]
fn saml_idp_loads_with_defaults_and_endpoints_from_public_url() {
    let c = load_with(SAML, &saml_env(true)).unwrap();
    let sp = c.saml.as_ref().unwrap();
    assert_eq!(sp.entity_id, "https://sso.example.com/saml/metadata");
    assert_eq!(sp.acs_url, "https://sso.example.com/saml/acs");
    assert!(sp.sign_authn_requests && sp.sign_metadata);
    let Protocol::Saml(s) = &c.idps[0].protocol else {
        panic!("expected a SAML IdP")
    };
    assert_eq!(s.entity_id, "https://iam.example.com/nidp/saml2/metadata");
    assert!(
        !s.dangerous_allow_sha1 && !s.allow_unsolicited,
        "unsafe switches off by default"
    );
    assert_eq!(s.clock_skew, Duration::from_secs(60));
    assert_eq!(c.idps[0].claims.email, "mail");
}

#[test]
fn saml_idp_without_a_signing_certificate_is_refused_at_its_metadata_line() {
    // samael would skip signature verification for such an IdP.
    let out = errors_with(SAML, &saml_env(false));
    assert_one(&out, 10, "no signing certificate");
}

#[test]
fn saml_idp_without_a_saml_table_is_refused() {
    let text = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am-saml"
protocol = "saml"
metadata_file = "idp.xml"
"#;
    assert_one(
        &errors_with(text, &saml_env(true)),
        5,
        "needs a `[saml]` table",
    );
}

#[test]
fn saml_unreadable_sp_key_is_reported_at_key_file() {
    let env = saml_env(true).without_file("certs/sp.key");
    assert_one(&errors_with(SAML, &env), 4, "cannot read certs/sp.key");
}

#[test]
fn saml_idp_without_metadata_is_reported() {
    let text = SAML.replace("metadata_file = \"idp.xml\"\n", "");
    assert_one(
        &errors_with(&text, &saml_env(true)),
        7,
        "needs `metadata_file` or `metadata_url`",
    );
}

// --- SAML interoperability (issue 10) ---

#[test]
fn saml_metadata_url_must_be_https_and_http_only_on_loopback_for_tests() {
    let msg = "`metadata_url` must use https (plain http only on loopback, with `allow_insecure_http = true`, for tests)";
    let with = |url: &str| {
        SAML.replace(
            "metadata_file = \"idp.xml\"",
            &format!("metadata_url = \"{url}\""),
        )
    };
    assert_one(
        &errors_with(
            &with("http://iam.example.com/nidp/saml2/metadata"),
            &saml_env(true),
        ),
        10,
        msg,
    );
    // Loopback without allow_insecure_http: refused as well (public_url stays https here).
    assert_one(
        &errors_with(&with("http://127.0.0.1:8443/md"), &saml_env(true)),
        10,
        msg,
    );
    assert!(
        load_with(
            &with("https://iam.example.com/nidp/saml2/metadata"),
            &saml_env(true)
        )
        .is_ok()
    );
    let insecure = format!(
        "allow_insecure_http = true\n{}",
        with("http://localhost:8443/md")
    );
    assert!(load_with(&insecure, &saml_env(true)).is_ok());
}

#[test]
fn saml_step_up_comparison_defaults_to_exact_and_minimum_needs_an_order() {
    let c = load_with(SAML, &saml_env(true)).unwrap();
    let Protocol::Saml(s) = &c.idps[0].protocol else {
        panic!("expected a SAML IdP")
    };
    assert_eq!(s.authn_context, crate::config::AuthnContextRule::Exact);
    let with =
        |lines: &str| SAML.replace("[idp.attributes]", &format!("{lines}\n[idp.attributes]"));
    let c = load_with(
        &with("authn_context_comparison = \"minimum\"\nauthn_context_order = [\"pwd\", \"mfa\", \"key\"]"),
        &saml_env(true),
    )
    .unwrap();
    let Protocol::Saml(s) = &c.idps[0].protocol else {
        panic!("expected a SAML IdP")
    };
    let rule = &s.authn_context;
    assert_eq!(rule.comparison(), "minimum");
    assert!(rule.satisfies("mfa", Some("key")) && rule.satisfies("mfa", Some("mfa")));
    assert!(!rule.satisfies("mfa", Some("pwd")) && !rule.satisfies("mfa", None));
    // A class outside the order is met only by itself.
    assert!(rule.satisfies("other", Some("other")) && !rule.satisfies("other", Some("key")));
    assert_eq!(
        rule.implied_by("key"),
        vec!["pwd".to_owned(), "mfa".to_owned()]
    );
    assert!(
        crate::config::AuthnContextRule::Exact
            .implied_by("key")
            .is_empty()
    );

    assert_one(
        &errors_with(
            &with("authn_context_comparison = \"minimum\""),
            &saml_env(true),
        ),
        11,
        "needs `authn_context_order`",
    );
    assert_one(
        &errors_with(
            &with("authn_context_comparison = \"minimum\"\nauthn_context_order = [\"a\", \"a\"]"),
            &saml_env(true),
        ),
        12,
        "each once",
    );
    assert_one(
        &errors_with(&with("authn_context_order = [\"a\"]"), &saml_env(true)),
        11,
        "only applies with `authn_context_comparison = \"minimum\"`",
    );
    assert_one(
        &errors_with(
            &with("authn_context_comparison = \"better\""),
            &saml_env(true),
        ),
        11,
        "use \"exact\" or \"minimum\"",
    );
}

#[test]
fn saml_metadata_signing_cert_must_be_a_readable_certificate() {
    let with = SAML.replace(
        "[idp.attributes]",
        "metadata_signing_cert = \"certs/md.crt\"\n[idp.attributes]",
    );
    assert_one(
        &errors_with(&with, &saml_env(true)),
        11,
        "cannot read `metadata_signing_cert` certs/md.crt",
    );
    let env = saml_env(true).file("certs/md.crt", "not a certificate");
    assert_one(&errors_with(&with, &env), 11, "not a PEM certificate");
    // With a certificate, an unsigned metadata_file is refused too.
    let (_, cert) = crate::federation::saml::sp::generate_key_and_cert("md").unwrap();
    let env = saml_env(true).file("certs/md.crt", &cert);
    assert_one(
        &errors_with(&with, &env),
        10,
        "not signed by metadata_signing_cert",
    );
}

// ---------------------------------------------------------------------------------------------
// Entitlements as code: templates, tags, rule kinds, grant settings, check warnings
// ---------------------------------------------------------------------------------------------

/// MINIMAL plus one account; tests append stores, templates and rules.
fn with_policy(policy: &str) -> String {
    format!(
        "{}\n[[bigcommerce]]\nid = \"main\"\nstore_hash = \"abc123\"\naccess_token = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\nb2b_access_token = \"b2b\"\n{policy}",
        doc(MINIMAL).trim_end()
    )
}

const TEMPLATED: &str = r#"
[[template]]
name = "standard"
[template.roles.merchandiser]
customer_group = "Staff"
[template.roles.agency]
customer_group = "Agencies"
allowed_paths = ["/b2b/", "/account.php"]
require_acr = "urn:example:contract:mfa"
max_session_age = "8h"
b2b = { company_id = 42, role = "junior_buyer" }

[[store]]
id = "nl"
name = "NL"
bigcommerce = "main"
url = "https://nl.example.com"
tags = ["EU", "brand-a"]
template = "standard"

[[store]]
id = "nl-b2b"
name = "NL B2B"
bigcommerce = "main"
channel_id = 2
url = "https://b2b.nl.example.com"
tags = ["eu"]
template = "standard"

[[rule]]
name = "eu-merch"
groups_any = ["bc-merch"]
roles_any = ["Buyer"]
attributes = { country = "NL", department = ["sales", "it"] }
attribute_regex = { title = "(?i)senior .*" }
acr_any = ["urn:example:contract:mfa"]
amr_any = ["otp"]
store_tags = ["eu"]
role = "merchandiser"

[[rule]]
name = "agency"
idps = ["am"]
stores = ["nl-b2b"]
role = "agency"
template = "standard"
expires_claim = "accessExpires"
b2b = { company_id = 7, company_role_id = 99 }
"#;

#[test]
fn templates_tags_and_every_rule_kind_load() {
    use crate::policy::{B2bGrant, B2bRole};
    let text = with_policy(TEMPLATED);
    let c = load_str(&text, FILE, &FakeEnv::default())
        .map_err(|d| d.to_string())
        .unwrap();
    assert_eq!(c.stores[0].tags, ["eu", "brand-a"]);
    assert_eq!(c.stores[0].template.as_deref(), Some("standard"));
    let t = c.policy.template("standard").unwrap();
    let agency = &t.roles["agency"];
    assert_eq!(agency.max_session_age, Some(8 * 3600));
    assert_eq!(
        agency.require_acr.as_deref(),
        Some("urn:example:contract:mfa")
    );
    assert_eq!(
        agency.b2b,
        Some(B2bGrant {
            company_id: 42,
            role: B2bRole::JuniorBuyer
        })
    );
    let eu = &c.policy.rules()[0];
    assert_eq!(eu.store_tags, ["eu"]);
    assert_eq!(eu.conditions.attributes["country"], ["NL"]);
    assert_eq!(
        eu.conditions.attribute_regex["title"].as_str(),
        "(?i)senior .*"
    );
    assert_eq!(eu.conditions.roles_any, ["Buyer"]);
    let agency_rule = &c.policy.rules()[1];
    assert_eq!(agency_rule.expires_claim.as_deref(), Some("accessExpires"));
    assert_eq!(
        agency_rule.grant.b2b,
        Some(B2bGrant {
            company_id: 7,
            role: B2bRole::Custom(99)
        })
    );
    let stores: Vec<&str> = c
        .policy
        .rules_for(&crate::identity::StoreId::new("nl"))
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(stores, ["eu-merch"]);
}

#[test]
fn bad_templates_and_grant_settings_are_reported_at_their_lines() {
    let text = with_policy(
        r#"
[[template]]
name = "t"
[template.roles.agency]
b2b = { company_id = 1, role = "boss" }
max_session_age = "soon"
allowed_paths = ["https://evil.example/", "/a/../b"]

[[store]]
id = "s"
name = "S"
bigcommerce = "main"
url = "https://s.example.com"
template = "missing"

[[rule]]
name = "r"
stores = ["s"]
role = "nobody"
template = "t"
attribute_regex = { title = "(" }

[[rule]]
name = "d"
effect = "deny"
stores = ["s"]
require_acr = "urn:x"
"#,
    );
    let got = load_str(&text, FILE, &FakeEnv::default())
        .unwrap_err()
        .to_string();
    let base = doc(MINIMAL).trim_end().lines().count() + 8;
    let want = [
        (base + 4, "`b2b.role`: \"boss\" is not"),
        (
            base + 5,
            "`template[0].roles.agency.max_session_age`: \"soon\" is not a duration",
        ),
        (
            base + 6,
            "`allowed_paths`: \"https://evil.example/\" must be a plain storefront path",
        ),
        (
            base + 6,
            "`allowed_paths`: \"/a/../b\" must be a plain storefront path",
        ),
        (
            base + 13,
            "names template \"missing\", which is not configured",
        ),
        (
            base + 18,
            "gives role \"nobody\", which its template \"t\" does not define",
        ),
        (base + 20, "`attribute_regex.title` is not a valid regex"),
        (base + 26, "deny rule \"d\" cannot set `require_acr`"),
    ];
    let items = parsed(&got);
    for (line, needle) in want {
        assert!(
            items.iter().any(|(l, m)| *l == line && m.contains(needle)),
            "missing line {line} `{needle}` in:\n{got}"
        );
    }
}

#[test]
fn check_warnings_carry_the_line_of_the_store_or_rule() {
    let text = with_policy(
        r#"
[[store]]
id = "lonely"
name = "Lonely"
bigcommerce = "main"
url = "https://lonely.example.com"

[[store]]
id = "s"
name = "S"
bigcommerce = "main"
url = "https://s.example.com"

[[rule]]
name = "first"
stores = ["s"]
role = "a"

[[rule]]
name = "second"
stores = ["s"]
role = "b"

[[rule]]
name = "apac"
store_tags = ["apac"]
role = "b"
"#,
    );
    let c = load_str(&text, FILE, &FakeEnv::default())
        .map_err(|d| d.to_string())
        .unwrap();
    let base = doc(MINIMAL).trim_end().lines().count() + 8;
    let got: Vec<(usize, &str)> = c
        .warnings
        .iter()
        .map(|w| (w.line, w.message.as_str()))
        .collect();
    let want = [
        (
            base + 2,
            "store \"lonely\" has no rule that grants it: nobody can open it",
        ),
        (
            base + 8,
            "store \"s\" has no template, and no rule granting it names one: its grants use only the rules' own settings",
        ),
        (
            base + 19,
            "rules \"first\" and \"second\" can both grant s; resolved by file order: \"first\" decides when both match",
        ),
        (
            base + 24,
            "rule \"apac\" can never match: its stores and store_tags select no configured store",
        ),
    ];
    for w in want {
        assert!(got.contains(&w), "missing {w:?} in {got:#?}");
    }
}

#[test]
fn a_group_dn_for_an_idp_that_reduces_dns_is_a_warning() {
    let text = with_policy(
        r#"
[idp.claims]
group_dn_to_name = true

[[store]]
id = "s"
name = "S"
bigcommerce = "main"
url = "https://s.example.com"

[[rule]]
name = "dn"
groups_any = ["cn=staff,ou=groups,o=corp"]
stores = ["s"]
role = "a"
"#,
    );
    // `[idp.claims]` after `[[bigcommerce]]` would attach to the wrong table: rebuild in order.
    let text = text.replace(
        "[[bigcommerce]]",
        "[idp.claims]\ngroup_dn_to_name = true\n\n[[bigcommerce]]",
    );
    let text = text.replacen(
        "\n[idp.claims]\ngroup_dn_to_name = true\n\n[[store]]",
        "\n[[store]]",
        1,
    );
    let c = load_str(&text, FILE, &FakeEnv::default())
        .map_err(|d| d.to_string())
        .unwrap();
    assert!(
        c.warnings.iter().any(|w| w.message.contains(
            "lists group DN cn=staff,ou=groups,o=corp but its IdP(s) reduce DNs to names"
        )),
        "{:?}",
        c.warnings
    );
}

#[test]
fn trusted_proxies_take_cidrs_and_addresses_and_report_the_rest() {
    let ok = format!(
        "trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"::1\"]\n{}",
        doc(MINIMAL)
    );
    let c = load_with(&ok, &FakeEnv::default()).unwrap();
    assert_eq!(c.trusted_proxies.len(), 3);
    assert!(c.trusted_proxies[1].contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap()));
    let bad = format!(
        "trusted_proxies = [\"10.0.0.0/8\", \"lb.example\"]\n{}",
        doc(MINIMAL)
    );
    assert_one(&errors(&bad), 1, "\"lb.example\" is not an address or CIDR");
}

/// [`BASELINE`] plus a `[scim]` table keeping its data in `store`, with the session store set to
/// `session_store`; also the line of the `store` key in `[scim]`.
fn with_scim_store(session_store: &str, store: &str) -> (String, usize) {
    let mut text = BASELINE.replace(
        "store = \"redis\"\nredis_url = \"redis://:${REDIS_PASSWORD}@redis:6379/0\"",
        session_store,
    );
    text.push_str(&format!(
        "\n[scim]\nenabled = true\nbearer_token = \"scim-token-0123456789\"\nstore = \"{store}\"\n"
    ));
    let line = doc(&text)
        .lines()
        .position(|l| l == format!("store = \"{store}\""))
        .expect("store line")
        + 1;
    (text, line)
}

#[test]
fn scim_store_redis_uses_the_session_redis() {
    let (text, _) = with_scim_store(
        "store = \"redis\"\nredis_url = \"redis://:${REDIS_PASSWORD}@redis:6379/0\"",
        "redis",
    );
    let c = load_with(&text, &baseline_env()).unwrap();
    assert!(matches!(
        c.scim.as_ref().map(|s| &s.store),
        Some(super::provisioning::ScimStorage::Redis)
    ));
}

#[test]
fn scim_store_redis_without_a_redis_is_reported_at_the_key() {
    let (text, line) = with_scim_store("store = \"memory\"", "redis");
    assert_one(
        &errors_with(&text, &baseline_env()),
        line,
        "`scim.store = \"redis\"` uses the gateway's Redis, and none is configured",
    );
}

#[test]
fn unknown_scim_store_is_reported_at_the_key() {
    let (text, line) = with_scim_store("store = \"memory\"", "postgres://db");
    assert_one(
        &errors_with(&text, &baseline_env()),
        line,
        "`scim.store`: \"postgres://db\" is not \"file:DIR\", \"redis\" or \"memory\"",
    );
}

#[test]
fn redis_queue_without_redis_sessions_is_refused_at_its_line() {
    let text = format!("{MINIMAL}[provisioning]\nqueue = \"redis\"\n");
    assert_one(
        &errors(&text),
        9,
        "`provisioning.queue = \"redis\"` uses the gateway's Redis: set `[session] store = \"redis\"`",
    );
}

#[test]
fn redis_queue_with_redis_sessions_loads_and_a_short_claim_is_refused() {
    use crate::config::provisioning::QueueStorage;
    let text =
        format!("{BASELINE}\n[provisioning]\nqueue = \"redis\"\nqueue_claim_after = \"90s\"\n");
    let c = load_with(&text, &baseline_env()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.provisioning.queue, QueueStorage::Redis);
    assert_eq!(c.provisioning.queue_claim_after, Duration::from_secs(90));
    let lines = doc(BASELINE).lines().count();
    let text =
        format!("{BASELINE}\n[provisioning]\nqueue = \"redis\"\nqueue_claim_after = \"500ms\"\n");
    assert_one(
        &errors_with(&text, &baseline_env()),
        lines + 4,
        "`provisioning.queue_claim_after` is shorter than 1s",
    );
}

// ---------------------------------------------------------------------------------------------
// Redis topology (session.redis_mode)
// ---------------------------------------------------------------------------------------------

/// BASELINE with its `[session]` Redis lines (file lines 6 and 7) replaced by `lines`.
fn with_session(lines: &str) -> String {
    BASELINE.replace(
        "store = \"redis\"\nredis_url = \"redis://:${REDIS_PASSWORD}@redis:6379/0\"\n",
        lines,
    )
}

#[test]
fn redis_sentinel_loads_with_master_and_credentials() {
    let text = with_session(
        "store = \"redis\"\nredis_mode = \"sentinel\"\nredis_nodes = [\"redis://:s3nt@s1:26379\", \"redis://:s3nt@s2:26379\"]\nredis_sentinel_master = \"storegate\"\nredis_username = \"gw\"\nredis_password = \"${REDIS_PASSWORD}\"\n",
    );
    let c = load_with(&text, &baseline_env()).unwrap();
    match &c.session.backend {
        SessionBackend::Redis(RedisTopology::Sentinel {
            sentinels,
            master,
            username,
            password,
        }) => {
            assert_eq!(sentinels.len(), 2);
            assert_eq!(sentinels[1].expose(), "redis://:s3nt@s2:26379");
            assert_eq!(master, "storegate");
            assert_eq!(username.as_deref(), Some("gw"));
            assert_eq!(password.as_ref().map(|p| p.expose()), Some("hunter2"));
        }
        other => panic!("expected sentinel, got {other:?}"),
    }
    let SessionBackend::Redis(t) = &c.session.backend else {
        unreachable!()
    };
    // What `storegate check` prints: no password.
    assert_eq!(
        t.summary(),
        "sentinel, master \"storegate\" through 2 sentinel(s) s1:26379, s2:26379 (no TLS)"
    );
}

#[test]
fn redis_cluster_loads_with_seed_nodes_and_tls() {
    let text = with_session(
        "store = \"redis\"\nredis_mode = \"cluster\"\nredis_nodes = [\"rediss://gw:${REDIS_PASSWORD}@r0:6379\", \"rediss://gw:${REDIS_PASSWORD}@r1:6380\"]\nredis_ca_file = \"/etc/ca.pem\"\n",
    );
    let c = load_with(&text, &baseline_env()).unwrap();
    let SessionBackend::Redis(t) = &c.session.backend else {
        panic!("expected redis")
    };
    assert_eq!(
        t,
        &RedisTopology::Cluster {
            nodes: vec![
                crate::secret::Secret::new("rediss://gw:hunter2@r0:6379"),
                crate::secret::Secret::new("rediss://gw:hunter2@r1:6380"),
            ]
        }
    );
    assert_eq!(
        t.summary(),
        "cluster, 2 seed node(s) r0:6379, r1:6380 (TLS)"
    );
}

#[test]
fn redis_sentinel_without_master_name_is_reported_at_the_mode() {
    let text = with_session(
        "store = \"redis\"\nredis_mode = \"sentinel\"\nredis_nodes = [\"redis://s1:26379\"]\n",
    );
    assert_one(
        &errors_with(&text, &baseline_env()),
        7,
        "`session.redis_mode = \"sentinel\"` needs `session.redis_sentinel_master`",
    );
}

#[test]
fn redis_cluster_without_nodes_is_reported_at_the_mode() {
    let text = with_session("store = \"redis\"\nredis_mode = \"cluster\"\n");
    assert_one(
        &errors_with(&text, &baseline_env()),
        7,
        "`session.redis_mode = \"cluster\"` needs `session.redis_nodes` (at least one cluster node URL)",
    );
}

#[test]
fn redis_nodes_mixing_tls_and_plain_are_reported() {
    let text = with_session(
        "store = \"redis\"\nredis_mode = \"cluster\"\nredis_nodes = [\"rediss://r0:6379\", \"redis://r1:6379\"]\n",
    );
    assert_one(
        &errors_with(&text, &baseline_env()),
        8,
        "mixes redis:// and rediss:// URLs",
    );
}

#[test]
fn redis_cluster_nodes_with_different_passwords_are_reported() {
    let text = with_session(
        "store = \"redis\"\nredis_mode = \"cluster\"\nredis_nodes = [\"redis://:a@r0:6379\", \"redis://:b@r1:6379\"]\n",
    );
    assert_one(
        &errors_with(&text, &baseline_env()),
        8,
        "must carry the same user and password",
    );
}

#[test]
fn redis_keys_of_another_mode_are_each_reported_on_their_line() {
    // A standalone URL with a sentinel master name, and a cluster with a sentinel password and a
    // unix-socket node: every problem, each on its own line.
    let text = with_session(
        "store = \"redis\"\nredis_url = \"redis://r:6379\"\nredis_sentinel_master = \"m\"\n",
    );
    assert_one(
        &errors_with(&text, &baseline_env()),
        8,
        "`session.redis_sentinel_master` is only used with `session.redis_mode = \"sentinel\"` (it is \"standalone\")",
    );
    let text = with_session(
        "store = \"redis\"\nredis_mode = \"cluster\"\nredis_nodes = [\"redis+unix:///run/r.sock\"]\nredis_password = \"x\"\n",
    );
    let items = parsed(&errors_with(&text, &baseline_env()));
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].0, 8);
    assert!(
        items[0]
            .1
            .contains("`session.redis_nodes[0]` must start with redis:// or rediss://"),
        "{items:?}"
    );
    assert_eq!(items[1].0, 9);
    assert!(
        items[1].1.contains(
            "`session.redis_password` is only used with `session.redis_mode = \"sentinel\"`"
        ),
        "{items:?}"
    );
}

#[test]
fn unknown_redis_mode_is_reported() {
    let text = with_session("store = \"redis\"\nredis_mode = \"replicated\"\n");
    assert_one(
        &errors_with(&text, &baseline_env()),
        7,
        "`session.redis_mode`: \"replicated\" is not \"standalone\", \"sentinel\" or \"cluster\"",
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 10: `[rate_limit]` and `[[idp]] trust_email`
// ---------------------------------------------------------------------------------------------

#[test]
fn rate_limit_defaults_configured_numbers_zero_off_and_a_zero_burst_refused() {
    use super::rate_limit::SignInLimit;
    let c = load_with(MINIMAL, &FakeEnv::default()).unwrap();
    assert_eq!(
        c.rate_limit.sign_in,
        Some(SignInLimit {
            per_minute: 600,
            burst: 1200
        })
    );
    let set = |extra: &str| format!("{}\n[rate_limit]\n{extra}", doc(MINIMAL));
    let c = load_with(&set("per_address_per_minute = 30\n"), &FakeEnv::default()).unwrap();
    assert_eq!(
        c.rate_limit.sign_in,
        Some(SignInLimit {
            per_minute: 30,
            burst: 60
        })
    );
    let c = load_with(
        &set("per_address_per_minute = 30\nper_address_burst = 5\n"),
        &FakeEnv::default(),
    )
    .unwrap();
    assert_eq!(
        c.rate_limit.sign_in,
        Some(SignInLimit {
            per_minute: 30,
            burst: 5
        })
    );
    let c = load_with(&set("per_address_per_minute = 0\n"), &FakeEnv::default()).unwrap();
    assert_eq!(c.rate_limit.sign_in, None, "0 turns the limit off");
    // MINIMAL is 7 lines, then a blank line and `[rate_limit]` on line 9.
    assert_one(
        &errors(&set("per_address_burst = 0\n")),
        10,
        "`rate_limit.per_address_burst` is 0",
    );
    assert_one(
        &errors(&set("per_minute = 5\n")),
        10,
        "unknown key `rate_limit.per_minute`",
    );
}

#[test]
fn trust_email_is_off_by_default_and_saml_never_reads_email_verified() {
    let c = load_with(MINIMAL, &FakeEnv::default()).unwrap();
    assert!(!c.idps[0].claims.trust_email);
    assert_eq!(
        c.idps[0].claims.email_verified.as_deref(),
        Some("email_verified")
    );
    let text = MINIMAL.replace(
        "client_id = \"storegate\"\n",
        "client_id = \"storegate\"\ntrust_email = true\n",
    );
    assert!(
        load_with(&text, &FakeEnv::default()).unwrap().idps[0]
            .claims
            .trust_email
    );
    let c = load_with(SAML, &saml_env(true)).unwrap();
    assert_eq!(c.idps[0].claims.email_verified, None);
    assert!(!c.idps[0].claims.trust_email);
    let text = SAML.replace(
        "metadata_file = \"idp.xml\"\n",
        "metadata_file = \"idp.xml\"\ntrust_email = true\n",
    );
    assert!(
        load_with(&text, &saml_env(true)).unwrap().idps[0]
            .claims
            .trust_email
    );
}

#[test]
fn an_email_domains_rule_only_saml_without_trust_email_could_match_is_a_warning() {
    const POLICY: &str = "\n[[bigcommerce]]\nid = \"main\"\nstore_hash = \"abc123\"\naccess_token = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\n[[store]]\nid = \"s\"\nname = \"S\"\nbigcommerce = \"main\"\nurl = \"https://s.example.com\"\n\n[[rule]]\nname = \"staff-by-domain\"\nemail_domains = [\"corp.example\"]\nstores = [\"s\"]\nrole = \"staff\"\n";
    let never = |c: &Config| {
        c.warnings
            .iter()
            .filter(|w| {
                w.message
                    .contains("\"staff-by-domain\" matches on email_domains")
            })
            .map(|w| (w.line, w.message.clone()))
            .collect::<Vec<_>>()
    };
    let saml = format!("{}{POLICY}", doc(SAML));
    let c = load_str(&saml, FILE, &saml_env(true)).unwrap();
    let found = never(&c);
    assert_eq!(found.len(), 1, "{:?}", c.warnings);
    // The rule's email_domains line.
    assert_eq!(
        found[0].0,
        saml.lines()
            .position(|l| l.starts_with("email_domains"))
            .unwrap()
            + 1
    );
    assert!(
        found[0]
            .1
            .contains("SAML IdP \"am-saml\" has no email_verified")
    );
    assert!(found[0].1.contains("set trust_email = true"));
    let trusted = saml.replace(
        "metadata_file = \"idp.xml\"\n",
        "metadata_file = \"idp.xml\"\ntrust_email = true\n",
    );
    assert!(never(&load_str(&trusted, FILE, &saml_env(true)).unwrap()).is_empty());
    // An OIDC IdP may send email_verified: no warning.
    let oidc = format!("{}\n{}", doc(MINIMAL).trim_end(), POLICY);
    assert!(never(&load_str(&oidc, FILE, &FakeEnv::default()).unwrap()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Webhooks (issue 13)
// ---------------------------------------------------------------------------------------------

#[test]
fn a_short_webhook_secret_is_refused_at_its_line() {
    let text = BASELINE.replace(
        "client_secret_file = \"secrets/bc\"\n",
        "client_secret_file = \"secrets/bc\"\nwebhook_secret = \"too-short\"\n",
    );
    assert_eq!(
        errors_with(&text, &baseline_env()),
        "storegate.toml:43: the webhook secret of [[bigcommerce]] \"main\" is 9 characters; use at least 24 random ones (e.g. `openssl rand -hex 24`)\n"
    );
}

#[test]
fn a_webhook_secret_from_the_environment_loads_and_an_unset_one_is_named() {
    let text = BASELINE.replace(
        "client_secret_file = \"secrets/bc\"\n",
        "client_secret_file = \"secrets/bc\"\nwebhook_secret = \"${ACME_HOOK_SECRET}\"\n",
    );
    let env = baseline_env().var("ACME_HOOK_SECRET", "0123456789abcdef0123456789abcdef");
    let c = load_with(&text, &env).unwrap();
    assert_eq!(
        c.bigcommerce[0].webhook_secret.as_ref().map(|s| s.expose()),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert!(
        !c.warnings.iter().any(|w| w.message.contains("webhook")),
        "{:?}",
        c.warnings
    );
    // BigCommerce delivers to https on port 443 only: another public_url is warned about.
    let elsewhere = text.replace(
        "public_url = \"https://sso.example.com/\"",
        "public_url = \"https://sso.example.com:8443/\"",
    );
    let c = load_with(&elsewhere, &env).unwrap();
    let w: Vec<(usize, &str)> = c
        .warnings
        .iter()
        .filter(|w| w.message.contains("webhook"))
        .map(|w| (w.line, w.message.as_str()))
        .collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, 43);
    assert!(w[0].1.contains("https on port 443 only"), "{w:?}");
    assert_eq!(
        errors_with(&text, &baseline_env()),
        "storegate.toml:43: `bigcommerce[0].webhook_secret` refers to the environment variable ACME_HOOK_SECRET, which is not set\n"
    );
}

// ---------------------------------------------------------------------------------------------
// [audit]: hash chain, writer id, rotation (issue 13)
// ---------------------------------------------------------------------------------------------

#[test]
fn audit_chain_is_on_by_default_without_rotation() {
    let c = load_with(MINIMAL, &FakeEnv::default()).unwrap();
    assert_eq!(c.audit_trail, crate::audit::TrailConfig::default());
    assert!(c.audit_trail.chain);
    assert_eq!(c.audit_trail.writer_id, None);
    assert_eq!(c.audit_trail.rotate, crate::audit::RotatePolicy::default());
}

#[test]
fn audit_chain_writer_and_rotation_load() {
    let text = format!(
        "{MINIMAL}\n[audit]\nfile = \"audit/storegate.jsonl\"\nchain = false\nwriter_id = \"gw-eu-1\"\nrotate_size = \"100MiB\"\nrotate_every = \"1d\"\n"
    );
    let c = load_with(&text, &FakeEnv::default()).unwrap();
    assert_eq!(c.audit, AuditTarget::File("audit/storegate.jsonl".into()));
    assert!(!c.audit_trail.chain);
    assert_eq!(c.audit_trail.writer_id.as_deref(), Some("gw-eu-1"));
    assert_eq!(c.audit_trail.rotate.max_bytes, Some(100 << 20));
    assert_eq!(
        c.audit_trail.rotate.max_age,
        Some(Duration::from_secs(24 * 3600))
    );
}

#[test]
fn audit_settings_that_cannot_work_are_reported_with_their_line() {
    // MINIMAL is lines 1-7; line 8 is blank, `[audit]` is line 9.
    let audit = |body: &str| format!("{MINIMAL}\n[audit]\n{body}\n");
    assert_one(
        &errors(&audit("file = \"a.jsonl\"\nwriter_id = \"gw 1!\"")),
        11,
        "`audit.writer_id` \"gw 1!\": use 1 to 64 letters",
    );
    assert_one(
        &errors(&audit("file = \"a.jsonl\"\nrotate_size = \"ten\"")),
        11,
        "`audit.rotate_size`: \"ten\" is not a size like \"100MiB\"",
    );
    assert_one(
        &errors(&audit("file = \"a.jsonl\"\nrotate_size = \"100\"")),
        11,
        "`audit.rotate_size` is 100 bytes: use at least 1024",
    );
    assert_one(
        &errors(&audit("file = \"a.jsonl\"\nrotate_every = \"10s\"")),
        11,
        "`audit.rotate_every` is 10s: use at least \"1m\"",
    );
    assert_one(
        &errors(&audit("file = \"a.jsonl\"\nrotate_every = \"daily\"")),
        11,
        "`audit.rotate_every`: \"daily\" is not a duration",
    );
    assert_one(
        &errors(&audit("rotate_size = \"1MiB\"")),
        10,
        "`audit.rotate_size` needs `audit.file`: stdout cannot be rotated",
    );
    assert_one(
        &errors(&audit("chain = \"yes\"")),
        10,
        "invalid type: string \"yes\", expected a boolean",
    );
}

#[test]
fn saml_sha1_switch_is_named_dangerous_and_the_old_name_still_works_with_a_warning() {
    let sha1 = |c: &Config| match &c.idps[0].protocol {
        Protocol::Saml(s) => s.dangerous_allow_sha1,
        _ => panic!("expected a SAML IdP"),
    };
    let env = saml_env(true);
    let line = doc(SAML).lines().count() - 1;
    let (new, old) = (
        SAML.replace(
            "metadata_file = \"idp.xml\"\n",
            "metadata_file = \"idp.xml\"\ndangerous_allow_sha1 = true\n",
        ),
        SAML.replace(
            "metadata_file = \"idp.xml\"\n",
            "metadata_file = \"idp.xml\"\nallow_sha1 = true\n",
        ),
    );
    let renamed = |c: &Config| -> Vec<(usize, String)> {
        c.warnings
            .iter()
            .filter(|w| w.message.contains("allow_sha1"))
            .map(|w| (w.line, w.message.clone()))
            .collect()
    };
    let c = load_with(&new, &env).unwrap();
    assert!(sha1(&c));
    assert!(renamed(&c).is_empty(), "{:?}", c.warnings);
    // The old name means the same, and `check` says to rename it, on its line.
    let c = load_with(&old, &env).unwrap();
    assert!(sha1(&c));
    let w = renamed(&c);
    assert_eq!(w.len(), 1, "{:?}", c.warnings);
    assert_eq!(w[0].0, line);
    assert!(
        w[0].1
            .contains("`allow_sha1` is the old name of `dangerous_allow_sha1`"),
        "{}",
        w[0].1
    );
    let off = SAML.replace(
        "metadata_file = \"idp.xml\"\n",
        "metadata_file = \"idp.xml\"\nallow_sha1 = false\n",
    );
    assert!(!sha1(&load_with(&off, &env).unwrap()));
    // Both names at once: refused, at the old one.
    let both = SAML.replace(
        "metadata_file = \"idp.xml\"\n",
        "metadata_file = \"idp.xml\"\ndangerous_allow_sha1 = false\nallow_sha1 = true\n",
    );
    assert_one(
        &errors_with(&both, &env),
        line + 1,
        "give only `dangerous_allow_sha1`",
    );
}

// ---------------------------------------------------------------------------------------------
// [admin] (issue 13)
// ---------------------------------------------------------------------------------------------

#[test]
fn admin_table_loads_its_conditions_and_defaults_its_name() {
    let text = format!(
        "{}\n[admin]\ngroups_any = [\"storegate-admins\"]\n",
        doc(MINIMAL)
    );
    let cfg = load_with(&text, &FakeEnv::default()).expect("loads");
    let admin = cfg.admin.expect("[admin] kept");
    assert_eq!(admin.name, "admin");
    assert_eq!(admin.conditions.groups_any, vec!["storegate-admins"]);
    assert!(
        load_with(doc(MINIMAL), &FakeEnv::default())
            .expect("loads")
            .admin
            .is_none()
    );
}

#[test]
fn admin_table_without_a_condition_is_refused_rather_than_open_to_everyone() {
    let text = format!("{}\n[admin]\nname = \"it\"\n", doc(MINIMAL));
    let lines = doc(MINIMAL).lines().count();
    assert_one(
        &errors(&text),
        lines + 2,
        "`[admin]` sets no condition, so every signed-in person would be an admin",
    );
}

#[test]
fn admin_idps_must_be_configured() {
    let text = format!("{}\n[admin]\nidps = [\"elsewhere\"]\n", doc(MINIMAL));
    let lines = doc(MINIMAL).lines().count();
    assert_one(
        &errors(&text),
        lines + 3,
        "`admin.idps` names idp \"elsewhere\", which is not configured",
    );
}

// ---------------------------------------------------------------------------------------------
// The portal's store logos and tags (issue 16)
// ---------------------------------------------------------------------------------------------

fn with_retail(extra: &str) -> String {
    BASELINE.replace(
        "id = \"retail\"\nname = \"Retail\"\n",
        &format!("id = \"retail\"\nname = \"Retail\"\n{extra}\n"),
    )
}

#[test]
fn a_store_logo_is_an_https_url_or_an_svg_file() {
    let c = load_with(
        &with_retail("logo = \"https://cdn.example.com/retail.svg\""),
        &baseline_env(),
    )
    .unwrap();
    let retail = c.store(&StoreId::new("retail".to_owned())).unwrap();
    assert_eq!(
        retail.logo,
        Some(Logo::Url(
            "https://cdn.example.com/retail.svg".parse().unwrap()
        ))
    );

    let svg = "<svg xmlns=\"http://www.w3.org/2000/svg\"/>";
    let env = baseline_env().file("logos/retail.svg", svg);
    let c = load_with(&with_retail("logo = \"logos/retail.svg\""), &env).unwrap();
    let retail = c.store(&StoreId::new("retail".to_owned())).unwrap();
    assert_eq!(retail.logo, Some(Logo::Svg(svg.into())));
}

#[test]
fn a_bad_store_logo_is_refused_with_its_fix() {
    let e = errors_with(
        &with_retail("logo = \"http://cdn.example.com/retail.svg\""),
        &baseline_env(),
    );
    assert!(e.contains("must be an https:// URL"), "{e}");
    let e = errors_with(&with_retail("logo = \"retail.png\""), &baseline_env());
    assert!(
        e.contains("is neither an https:// URL nor an .svg file"),
        "{e}"
    );
    let e = errors_with(&with_retail("logo = \"missing.svg\""), &baseline_env());
    assert!(e.contains("cannot read missing.svg"), "{e}");
    let env = baseline_env().file("x.svg", "<html>not a picture</html>");
    let e = errors_with(&with_retail("logo = \"x.svg\""), &env);
    assert!(e.contains("x.svg is not an SVG document"), "{e}");
    let env = baseline_env().file("big.svg", &format!("<svg>{}</svg>", "x".repeat(70_000)));
    let e = errors_with(&with_retail("logo = \"big.svg\""), &env);
    assert!(
        e.contains("more than the 65536 a tile logo may have"),
        "{e}"
    );
}

#[test]
fn store_tags_are_words_or_kind_value_pairs() {
    let c = load_with(
        &with_retail("tags = [\"Brand:Acme\", \"region:eu\", \"outlet\"]"),
        &baseline_env(),
    )
    .unwrap();
    let retail = c.store(&StoreId::new("retail".to_owned())).unwrap();
    assert_eq!(retail.tags, ["brand:acme", "region:eu", "outlet"]);
    for bad in [
        "\"brand:\"",
        "\":eu\"",
        "\" region:eu\"",
        "\"a:b:c\"",
        "\"\"",
    ] {
        let e = errors_with(&with_retail(&format!("tags = [{bad}]")), &baseline_env());
        assert!(e.contains("must be a word or `kind:value`"), "{bad}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// [audit] postgres_url (issue 13)
// ---------------------------------------------------------------------------------------------

#[test]
fn audit_postgres_url_loads_with_a_spool_beside_the_file() {
    let text = format!(
        "{}\n[audit]\nfile = \"audit/sg.jsonl\"\npostgres_url = \"${{AUDIT_DB}}\"\n",
        doc(MINIMAL)
    );
    let env = FakeEnv::default().var("AUDIT_DB", "postgres://app:pw@db.example.com:5432/audit");
    let cfg = load_with(&text, &env).expect("loads");
    let sink = cfg.audit_postgres.expect("sink");
    assert_eq!(sink.spool_file, PathBuf::from("audit/sg.jsonl.pgspool"));
    assert_eq!(sink.spool_max, 64 << 20);
    assert!(
        !format!("{sink:?}").contains("pw"),
        "the password never prints"
    );
}

#[test]
fn audit_postgres_url_of_the_wrong_shape_is_refused_without_echoing_it() {
    let lines = doc(MINIMAL).lines().count();
    for bad in ["mysql://app:pw@db/audit", "postgres://app:pw@/audit"] {
        let text = format!("{}\n[audit]\npostgres_url = \"{bad}\"\n", doc(MINIMAL));
        let rendered = errors(&text);
        assert_one(&rendered, lines + 3, "`audit.postgres_url`");
        assert!(!rendered.contains("pw"), "{rendered}");
    }
}

#[test]
fn audit_postgres_url_needs_the_chain() {
    let text = format!(
        "{}\n[audit]\nchain = false\npostgres_url = \"postgres://app@db/audit\"\n",
        doc(MINIMAL)
    );
    let lines = doc(MINIMAL).lines().count();
    assert_one(&errors(&text), lines + 4, "needs `audit.chain = true`");
}

// `[[route]]` and `[forward_auth]` (issue 14).
#[path = "route_tests.rs"]
mod route;

// `[[permission_set]]` and `control_panel` (issue 12).
#[path = "permission_set_tests.rs"]
mod permission_set;

// `[[account]]` (issue 12).
#[path = "account_tests.rs"]
mod account;
