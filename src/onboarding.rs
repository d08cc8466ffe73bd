//! The onboarding sheet `storegate check --onboarding FILE` writes for the Access Manager team:
//! per IdP, what to register (redirect and logout URIs, or the SP metadata URL, entity ID and
//! endpoints), which attributes to release under which names, and the algorithms accepted. All
//! of it from the validated configuration; no secret is ever written (the client secret is named
//! as "the value in `client_secret`", never shown).
//!
//! Markdown (`.md`) or a standalone HTML page (`.html`, no script, no external resource).

use std::fmt::Write;

use crate::config::{Config, IdpConfig, Protocol, TokenAuthMethod};

/// One row of a table: what to enter, and the value.
type Row = (String, String);

struct Part {
    heading: String,
    rows: Vec<Row>,
}

/// The strong signature algorithms a SAML response (and signed metadata) may use.
const SAML_ALGORITHMS: &str =
    "RSA-SHA256, RSA-SHA384, RSA-SHA512, ECDSA-SHA256/384/512 (digests SHA-256 or stronger)";

fn parts(cfg: &Config) -> Vec<Part> {
    cfg.idps.iter().map(|idp| idp_part(cfg, idp)).collect()
}

fn idp_part(cfg: &Config, idp: &IdpConfig) -> Part {
    let mut rows: Vec<Row> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
    let c = &idp.claims;
    match &idp.protocol {
        Protocol::Oidc(o) => {
            row(
                "Protocol",
                "OpenID Connect (Applications > OAuth clients)".into(),
            );
            row("Client ID", o.client_id.clone());
            row(
                "Client secret",
                if o.client_secret.is_some() {
                    "confidential client: the secret configured in `client_secret` (not shown here)"
                        .into()
                } else {
                    "public client (no secret), PKCE required".into()
                },
            );
            row("Login redirect URI", idp.redirect_uri(&cfg.public_url));
            row("Logout redirect URI", cfg.logout_uri());
            row(
                "Back-channel logout URI (backchannel_logout_uri, session required)",
                idp.backchannel_logout_uri(&cfg.public_url),
            );
            if let Some(u) = &o.end_session_url {
                row("End-session URL used", u.to_string());
            }
            row(
                "Grant",
                "authorization code with PKCE (S256); no implicit or hybrid flow".into(),
            );
            row(
                "Token endpoint authentication",
                match o.auth_method {
                    TokenAuthMethod::ClientSecretBasic => "client_secret_basic".into(),
                    TokenAuthMethod::ClientSecretPost => "client_secret_post".into(),
                },
            );
            row(
                "ID token signing algorithm",
                format!("{} (never `none`)", o.id_token_algs.join(" or ")),
            );
            row("Scopes requested", o.scopes.join(" "));
            let mut claims = vec![
                c.email.clone(),
                c.given_name.clone(),
                c.family_name.clone(),
                c.groups.clone(),
            ];
            if let Some(v) = &c.email_verified {
                claims.insert(1, v.clone());
            }
            row(
                "Claims to release (ID token or userinfo)",
                claims.join(", "),
            );
        }
        Protocol::Saml(s) => {
            row(
                "Protocol",
                "SAML 2.0 (Trusted Providers > Service Providers)".into(),
            );
            if let Some(sp) = &cfg.saml {
                row("SP metadata URL", sp.metadata_url.clone());
                row("SP entity ID", sp.entity_id.clone());
                row("Assertion Consumer Service (HTTP-POST)", sp.acs_url.clone());
                row(
                    "Single Logout (HTTP-Redirect and HTTP-POST)",
                    sp.slo_url.clone(),
                );
                row(
                    "Signed requests",
                    if sp.sign_authn_requests {
                        "AuthnRequests are signed with the SP certificate in the metadata".into()
                    } else {
                        "AuthnRequests are not signed".into()
                    },
                );
            }
            row(
                "NameID format",
                s.nameid_format
                    .clone()
                    .unwrap_or_else(|| "any persistent identifier".into()),
            );
            row(
                "Attributes to release",
                format!(
                    "email: {}; given name: {}; family name: {}; groups: {}",
                    c.email, c.given_name, c.family_name, c.groups
                ),
            );
            row(
                "Signature",
                format!("the Response or the Assertion signed; {SAML_ALGORITHMS}"),
            );
        }
    }
    Part {
        heading: format!("{} (`{}`)", idp.display_name, idp.id),
        rows,
    }
}

/// The sheet as Markdown.
pub fn markdown(cfg: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# storegate onboarding: {}\n", cfg.base_url());
    let _ = writeln!(
        out,
        "What to register in OpenText Access Manager for the storegate gateway at {}. Generated by `storegate check --onboarding` from its configuration. Questions: {}.\n",
        cfg.base_url(),
        cfg.support_contact
    );
    for p in parts(cfg) {
        let _ = writeln!(out, "## {}\n", p.heading);
        let _ = writeln!(out, "| Setting | Value |\n|---|---|");
        for (k, v) in p.rows {
            let _ = writeln!(out, "| {k} | {} |", v.replace('|', "\\|"));
        }
        out.push('\n');
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('`', "")
}

/// The sheet as a standalone HTML page.
pub fn html(cfg: &Config) -> String {
    let mut out = String::new();
    let title = format!("storegate onboarding: {}", cfg.base_url());
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d2733}}table{{border-collapse:collapse;width:100%;margin-bottom:2rem}}th,td{{text-align:left;vertical-align:top;border:1px solid #dde3ea;padding:.4rem .6rem}}th{{width:30%}}code{{word-break:break-all}}</style>\n</head>\n<body>\n<main>\n<h1>{}</h1>\n<p>What to register in OpenText Access Manager for the storegate gateway at <code>{}</code>. Generated by <code>storegate check --onboarding</code> from its configuration. Questions: {}.</p>\n",
        esc(&title),
        esc(&title),
        esc(cfg.base_url()),
        esc(&cfg.support_contact)
    );
    for p in parts(cfg) {
        let _ = writeln!(out, "<h2>{}</h2>\n<table>\n<tbody>", esc(&p.heading));
        for (k, v) in p.rows {
            let _ = writeln!(
                out,
                "<tr><th scope=\"row\">{}</th><td><code>{}</code></td></tr>",
                esc(&k),
                esc(&v)
            );
        }
        let _ = writeln!(out, "</tbody>\n</table>");
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// Markdown or HTML by the file's extension (`.html`/`.htm` -> HTML, anything else Markdown).
pub fn render_for(path: &std::path::Path, cfg: &Config) -> String {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html" | "htm") => html(cfg),
        _ => markdown(cfg),
    }
}
