//! `[[permission_set]]` and the `control_panel` grant key: what loads, and every refusal on its
//! line.

use super::*;

const SETS: &str = r#"
[[permission_set]]
name = "merchandiser"
permissions = ["Manage_Products", "Create_Product", "Edit_Products", "Manage_Categories", "Manage_PriceLists"]

[[permission_set]]
name = "finance"
permissions = ["Manage_Orders", "Refund_Orders"]

[[template]]
name = "staff"
[template.roles.merchandiser]
control_panel = "merchandiser"
[template.roles.buyer]
customer_group = "Staff"

[[store]]
id = "us"
name = "US"
bigcommerce = "main"
url = "https://us.example.com"
template = "staff"

[[rule]]
name = "merch"
groups_any = ["bc-merch"]
stores = ["us"]
role = "merchandiser"

[[rule]]
name = "finance"
groups_any = ["bc-finance"]
stores = ["us"]
role = "buyer"
control_panel = "finance"
"#;

/// The 1-based line of the `nth` (0-based) line of `text` containing `needle`.
fn line_of(text: &str, needle: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(nth)
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` #{nth} not in the text"))
}

#[test]
fn permission_sets_and_control_panel_grants_load() {
    let cfg = load_with(&with_policy(SETS), &FakeEnv::default()).unwrap();
    let p = &cfg.policy;
    assert_eq!(
        p.permission_sets().keys().collect::<Vec<_>>(),
        ["finance", "merchandiser"]
    );
    assert_eq!(
        p.permission_set("finance")
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        ["Manage_Orders", "Refund_Orders"]
    );
    assert_eq!(p.store_account(&StoreId::new("us")), Some("main"));
    assert_eq!(
        p.template("staff").unwrap().roles["merchandiser"].control_panel,
        Some("merchandiser".into())
    );
    assert_eq!(p.rules()[1].grant.control_panel, Some("finance".into()));
    assert!(
        !cfg.warnings
            .iter()
            .any(|w| w.message.contains("permission code")),
        "documented codes raise no warning: {:?}",
        cfg.warnings
    );
}

#[test]
fn an_unknown_set_is_refused_on_the_template_role_and_on_the_rule() {
    let text = with_policy(
        &SETS
            .replace(
                "control_panel = \"merchandiser\"",
                "control_panel = \"merch\"",
            )
            .replace("control_panel = \"finance\"", "control_panel = \"finanse\""),
    );
    let got = parsed(&errors(&text));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, line_of(&text, "control_panel = \"merch\"", 0));
    assert!(
        got[0].1.contains(
            "`control_panel` names permission set \"merch\", which is not configured (configured: finance, merchandiser)"
        ),
        "{got:?}"
    );
    assert_eq!(got[1].0, line_of(&text, "control_panel = \"finanse\"", 0));
    assert!(got[1].1.contains("\"finanse\""), "{got:?}");
}

#[test]
fn a_deny_rule_cannot_grant_the_control_panel() {
    let text = with_policy(&format!(
        "{SETS}\n[[rule]]\nname = \"leavers\"\neffect = \"deny\"\ngroups_any = [\"leavers\"]\nstores = [\"us\"]\ncontrol_panel = \"finance\"\n"
    ));
    assert_one(
        &errors(&text),
        line_of(&text, "control_panel = \"finance\"", 1),
        "deny rule \"leavers\" cannot set `control_panel`: it grants nothing",
    );
}

#[test]
fn duplicate_empty_and_malformed_sets_are_refused_on_their_lines() {
    let text = with_policy(&format!(
        "{SETS}\n[[permission_set]]\nname = \"finance\"\npermissions = [\"Manage_Orders\"]\n\n[[permission_set]]\nname = \"support\"\npermissions = []\n\n[[permission_set]]\nname = \"typo\"\npermissions = [\"manage orders\"]\n"
    ));
    let got = parsed(&errors(&text));
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].0, line_of(&text, "name = \"finance\"", 2));
    assert_eq!(got[0].1, "duplicate [[permission_set]] name \"finance\"");
    assert_eq!(got[1].0, line_of(&text, "permissions = []", 0));
    assert!(
        got[1].1.contains("\"support\" lists no permissions"),
        "{got:?}"
    );
    assert_eq!(got[2].0, line_of(&text, "\"manage orders\"", 0));
    assert!(
        got[2]
            .1
            .contains("\"manage orders\" is not a permission code"),
        "{got:?}"
    );
}

#[test]
fn an_undocumented_code_is_a_warning_not_an_error() {
    let text = with_policy(&SETS.replace("\"Refund_Orders\"", "\"Refund_Order\""));
    let cfg = load_with(&text, &FakeEnv::default()).unwrap();
    let about_codes: Vec<_> = cfg
        .warnings
        .iter()
        .filter(|w| w.message.contains("permission code"))
        .collect();
    assert_eq!(about_codes.len(), 1, "{:?}", cfg.warnings);
    assert_eq!(about_codes[0].line, line_of(&text, "\"Refund_Order\"", 0));
    assert_eq!(
        about_codes[0].message,
        "[[permission_set]] \"finance\": \"Refund_Order\" is not a permission code BigCommerce documents; check its spelling against the `permissions` the Account API reports"
    );
}

/// storegate.example.toml with its commented `[[permission_set]]` block and `control_panel`
/// keys uncommented.
fn example_uncommented() -> String {
    let text = include_str!("../../storegate.example.toml");
    let mut out = String::new();
    let mut in_sets = false;
    for line in text.lines() {
        if line == "# [[permission_set]]" {
            in_sets = true;
        }
        let line = if in_sets && line.starts_with("# ") {
            &line[2..]
        } else if in_sets && line == "#" {
            ""
        } else if line.starts_with("# control_panel = ") {
            &line[2..]
        } else {
            in_sets = false;
            line
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn the_example_accepts_its_permission_sets_and_control_panel_keys_uncommented() {
    let env = FakeEnv::default()
        .var("REDIS_URL", "redis://:pw@127.0.0.1:6379/0")
        .var("NAM_CLIENT_SECRET", "nam-secret")
        .var("PARTNERS_CLIENT_SECRET_FILE", "/run/secrets/partners")
        .file("/run/secrets/partners", "partners-secret\n")
        .var("BC_MAIN_ACCESS_TOKEN", "main-token")
        .var("BC_MAIN_CLIENT_ID", "main-client")
        .var("BC_MAIN_CLIENT_SECRET", "main-secret")
        .var("BC_OUTLET_ACCESS_TOKEN", "outlet-token")
        .var("BC_OUTLET_CLIENT_ID", "outlet-client")
        .var("BC_OUTLET_CLIENT_SECRET", "outlet-secret")
        .var("BC_OUTLET_B2B_ACCESS_TOKEN", "outlet-b2b-token")
        .var("STOREGATE_SCIM_TOKEN", "scim-token-0123456789abcdef");
    let text = example_uncommented();
    let cfg = load_str(&text, FILE, &env).unwrap_or_else(|d| panic!("{d}"));
    let p = &cfg.policy;
    assert_eq!(
        p.permission_sets().keys().collect::<Vec<_>>(),
        ["finance", "merchandiser", "support"]
    );
    let retail = p.template("retail").unwrap();
    for role in ["merchandiser", "finance", "support"] {
        assert_eq!(
            retail.roles[role].control_panel.as_deref(),
            Some(role),
            "{role}"
        );
    }
    assert!(
        !cfg.warnings
            .iter()
            .any(|w| w.message.contains("permission code")),
        "{:?}",
        cfg.warnings
    );
}
