//! `[[account]]` (control-panel users, issue 12): what loads, and every refusal as the exact
//! `FILE:LINE: message` an operator reads.

use super::*;

const UUID: &str = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";

/// MINIMAL, `[[bigcommerce]]` main (abc123) and outlet (xyz789), then `accounts`.
fn with_accounts(accounts: &str) -> String {
    format!(
        "{}\n[[bigcommerce]]\nid = \"outlet\"\nstore_hash = \"xyz789\"\naccess_token = \"t2\"\nclient_id = \"c2\"\nclient_secret = \"s2\"\n{accounts}",
        with_policy("").trim_end()
    )
}

const ACME: &str = r#"
[[account]]
id = "acme"
account_uuid = "0F1E2D3C-4B5A-6978-8A9B-0C1D2E3F4A5B"
access_token = "${BC_ACCOUNT_TOKEN}"
stores = ["main", "outlet"]
keep_account_on_leave = true
"#;

fn env() -> FakeEnv {
    FakeEnv::default().var("BC_ACCOUNT_TOKEN", "account-token")
}

/// The 1-based line of the `nth` (0-based) line of `text` containing `needle`.
fn line_of(text: &str, needle: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(nth)
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` #{nth} not in the text"))
}

/// `ACME` with `from` replaced by `to`, loaded: the rendered diagnostics.
fn refused(from: &str, to: &str) -> (String, String) {
    assert!(ACME.contains(from), "{from} not in ACME");
    let text = with_accounts(&ACME.replace(from, to));
    let e = errors_with(&text, &env());
    (text, e)
}

#[test]
fn an_account_loads_with_its_defaults_and_store_hashes() {
    let cfg = load_with(&with_accounts(ACME), &env()).unwrap();
    assert_eq!(cfg.accounts.len(), 1);
    let a = &cfg.accounts[0];
    assert_eq!(a.id, "acme");
    assert_eq!(
        a.account_uuid, UUID,
        "kept lower-case, as the API's paths use it"
    );
    assert_eq!(a.access_token.expose(), "account-token");
    assert_eq!(a.api_base.as_str(), "https://api.bigcommerce.com/");
    assert_eq!(
        a.stores
            .iter()
            .map(|s| (s.id.as_str(), s.store_hash.as_str()))
            .collect::<Vec<_>>(),
        [("main", "abc123"), ("outlet", "xyz789")]
    );
    assert!(a.keep_account_on_leave);
    assert!(!a.manage_all);
}

#[test]
fn the_token_also_comes_from_a_file() {
    let text = with_accounts(&ACME.replace(
        "access_token = \"${BC_ACCOUNT_TOKEN}\"",
        "access_token_file = \"/run/secrets/bc-account\"",
    ));
    let env = FakeEnv::default().file("/run/secrets/bc-account", "file-token\n");
    let cfg = load_with(&text, &env).unwrap();
    assert_eq!(cfg.accounts[0].access_token.expose(), "file-token");
}

#[test]
fn an_account_uuid_that_is_not_a_uuid_is_refused_on_its_line() {
    let (text, e) = refused(
        "account_uuid = \"0F1E2D3C-4B5A-6978-8A9B-0C1D2E3F4A5B\"",
        "account_uuid = \"abc123\"",
    );
    assert_eq!(
        e,
        format!(
            "{FILE}:{}: `account_uuid` \"abc123\" is not a UUID like 0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b (the account's id, not a store hash)\n",
            line_of(&text, "account_uuid", 0)
        )
    );
    // A UUID without its hyphens is not the form BigCommerce shows either.
    let (text, e) = refused(
        "account_uuid = \"0F1E2D3C-4B5A-6978-8A9B-0C1D2E3F4A5B\"",
        "account_uuid = \"0f1e2d3c4b5a69788a9b0c1d2e3f4a5b\"",
    );
    assert_eq!(
        parsed(&e),
        [(
            line_of(&text, "account_uuid", 0),
            "`account_uuid` \"0f1e2d3c4b5a69788a9b0c1d2e3f4a5b\" is not a UUID like 0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b (the account's id, not a store hash)".to_owned()
        )]
    );
}

#[test]
fn an_account_without_a_token_is_refused_on_its_table() {
    let (text, e) = refused("access_token = \"${BC_ACCOUNT_TOKEN}\"\n", "");
    assert_eq!(
        e,
        format!(
            "{FILE}:{}: `account[0]` needs `access_token` (or `access_token_file`)\n",
            line_of(&text, "[[account]]", 0)
        )
    );
}

#[test]
fn an_account_with_both_token_forms_is_refused() {
    let (text, e) = refused(
        "access_token = \"${BC_ACCOUNT_TOKEN}\"",
        "access_token = \"${BC_ACCOUNT_TOKEN}\"\naccess_token_file = \"/run/secrets/bc-account\"",
    );
    assert_eq!(
        e,
        format!(
            "{FILE}:{}: set either `access_token` or `access_token_file`, not both\n",
            line_of(&text, "access_token_file", 0)
        )
    );
}

#[test]
fn an_empty_token_and_an_unset_variable_are_refused() {
    let (text, e) = refused("\"${BC_ACCOUNT_TOKEN}\"", "\"  \"");
    assert_eq!(
        e,
        format!(
            "{FILE}:{}: `account[0].access_token` is empty\n",
            line_of(&text, "access_token = \"  \"", 0)
        )
    );
    let text = with_accounts(ACME);
    let e = errors_with(&text, &FakeEnv::default());
    let got = parsed(&e);
    assert_eq!(got.len(), 1, "{e}");
    assert_eq!(got[0].0, line_of(&text, "${BC_ACCOUNT_TOKEN}", 0));
    assert!(
        got[0]
            .1
            .contains("refers to the environment variable BC_ACCOUNT_TOKEN, which is not set"),
        "{e}"
    );
}

#[test]
fn a_store_that_is_not_a_bigcommerce_id_is_refused_on_its_line() {
    let (text, e) = refused(
        "stores = [\"main\", \"outlet\"]",
        "stores = [\"main\", \"mian\"]",
    );
    assert_eq!(
        e,
        format!(
            "{FILE}:{}: [[account]] \"acme\" names store \"mian\", which is not a configured [[bigcommerce]] id\n",
            line_of(&text, "stores = ", 0)
        )
    );
}

#[test]
fn an_account_without_stores_is_refused() {
    let (text, e) = refused("stores = [\"main\", \"outlet\"]", "stores = []");
    assert_eq!(
        e,
        format!(
            "{FILE}:{}: [[account]] \"acme\" needs `stores`: the [[bigcommerce]] ids of its store hashes\n",
            line_of(&text, "stores = ", 0)
        )
    );
}

#[test]
fn a_store_in_two_accounts_is_refused_on_the_second() {
    let second = format!(
        "{ACME}\n[[account]]\nid = \"other\"\naccount_uuid = \"1f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b\"\naccess_token = \"t3\"\nstores = [\"outlet\"]\n"
    );
    let text = with_accounts(&second);
    assert_eq!(
        errors_with(&text, &env()),
        format!(
            "{FILE}:{}: store \"outlet\" is in [[account]] \"acme\" and in \"other\": a store hash belongs to one account\n",
            line_of(&text, "stores = ", 1)
        )
    );
}

#[test]
fn a_store_listed_twice_in_one_account_is_named_as_such() {
    let (text, e) = refused(
        "stores = [\"main\", \"outlet\"]",
        "stores = [\"main\", \"outlet\", \"main\"]",
    );
    assert_eq!(
        e,
        format!(
            "{FILE}:{}: [[account]] \"acme\" lists store \"main\" twice\n",
            line_of(&text, "stores = ", 0)
        )
    );
}

#[test]
fn two_accounts_with_one_id_are_refused() {
    let second = format!(
        "{ACME}\n[[account]]\nid = \"acme\"\naccount_uuid = \"1f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b\"\naccess_token = \"t3\"\nstores = [\"outlet\"]\n"
    );
    let text =
        with_accounts(&second.replace("stores = [\"main\", \"outlet\"]", "stores = [\"main\"]"));
    assert_eq!(
        errors_with(&text, &env()),
        format!(
            "{FILE}:{}: duplicate [[account]] id \"acme\"\n",
            line_of(&text, "id = \"acme\"", 1)
        )
    );
}

#[test]
fn an_unknown_key_in_an_account_is_refused_on_its_line() {
    let (text, e) = refused(
        "keep_account_on_leave = true",
        "keep_acount_on_leave = true",
    );
    assert_eq!(
        e,
        format!(
            "{FILE}:{}: unknown key `account[0].keep_acount_on_leave`\n",
            line_of(&text, "keep_acount_on_leave", 0)
        )
    );
}

#[test]
fn an_api_base_that_is_not_http_is_refused_on_its_line() {
    for (base, why) in [
        (
            "ftp://api.bigcommerce.com",
            "must be an http(s) URL with a host",
        ),
        (
            "api.bigcommerce.com",
            "is not a URL (relative URL without a base)",
        ),
    ] {
        let (text, e) = refused("stores = [", &format!("api_base = \"{base}\"\nstores = ["));
        assert_eq!(
            e,
            format!(
                "{FILE}:{}: `account[0].api_base`: \"{base}\" {why}\n",
                line_of(&text, "api_base", 0)
            )
        );
    }
}
