//! Policy reload: on SIGHUP and when the configuration file changes, the file is validated in
//! full first; only a valid file whose non-reloadable parts are unchanged replaces the running
//! policy. An invalid file is refused, the old policy stays, and a log line says why.
//!
//! The reloadable part is small on purpose: the policy (templates, rules), the stores and the
//! `[admin]` rule's conditions (adding or removing `[admin]` mounts or unmounts the console, so
//! that needs a restart). IdPs,
//! BigCommerce accounts (credentials, clients), sessions, the listener, `[saml]`, `[scim]`,
//! `[provisioning]`, `[audit]`, `[telemetry]`, `[rate_limit]` and the proxy settings need a
//! restart, and a reload that changes them is refused rather than half applied.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::clock::{SharedClock, UnixTime};
use crate::config::{self, Config, Diagnostics, SessionBackend, Store};
use crate::identity::StoreId;
use crate::metrics::Metrics;
use crate::policy::Policy;

/// What handlers decide with: one consistent pair of policy and stores.
#[derive(Debug)]
pub struct PolicySnapshot {
    pub policy: Policy,
    pub stores: Vec<Store>,
    /// Who may use the console (`[admin]`); the console decides with this one.
    pub admin: Option<crate::policy::admin::AdminRule>,
}

impl PolicySnapshot {
    pub fn from_config(cfg: &Config) -> Self {
        PolicySnapshot {
            policy: cfg.policy.clone(),
            stores: cfg.stores.clone(),
            admin: cfg.admin.clone(),
        }
    }

    pub fn store(&self, id: &StoreId) -> Option<&Store> {
        self.stores.iter().find(|s| &s.id == id)
    }
}

/// The running policy, swapped atomically: a request keeps the snapshot it started with.
pub type SharedPolicy = Arc<ArcSwap<PolicySnapshot>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadRefused {
    #[error("the file is invalid:\n{0}")]
    Invalid(String),
    #[error("{0} changed, which needs a restart")]
    NeedsRestart(String),
}

/// The parts a reload may not change, compared between the running and the new configuration.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.public_url != new.public_url || old.listen != new.listen {
        out.push("public_url or listen".to_owned());
    }
    // IdP clients are built at start: id, protocol settings and claim mapping are fixed. (Secrets
    // print redacted, so a rotated secret is not detected here: rotating one needs a restart.)
    let idps = |c: &Config| -> Vec<String> {
        c.idps
            .iter()
            .map(|i| format!("{:?}", (i.id.as_str(), &i.protocol, &i.claims)))
            .collect()
    };
    if idps(old) != idps(new) {
        out.push("[[idp]]".to_owned());
    }
    let accounts = |c: &Config| -> Vec<(String, String, String, bool)> {
        c.bigcommerce
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    a.store_hash.clone(),
                    a.api_base.to_string(),
                    a.b2b.is_some(),
                )
            })
            .collect()
    };
    if accounts(old) != accounts(new) {
        out.push("[[bigcommerce]]".to_owned());
    }
    let backend = |c: &Config| match &c.session.backend {
        SessionBackend::Memory => None,
        // Compared, never printed.
        SessionBackend::Redis(t) => Some(t.clone()),
    };
    if backend(old) != backend(new)
        || old.session.idle_timeout != new.session.idle_timeout
        || old.session.absolute_timeout != new.session.absolute_timeout
        || old.session.cookie_name != new.session.cookie_name
    {
        out.push("[session]".to_owned());
    }
    // Everything else is read once at start (the SAML SP's keys, the SCIM store and its
    // credentials, the reconciler's queue and schedule, the audit sink, the trace exporter, the
    // proxies believed for client addresses): a change there would be silently ignored, so the
    // reload is refused and says so. Compared by their redacting `Debug` form, never printed.
    let same =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let sections: [(&str, bool); 10] = [
        (
            "[admin] added or removed",
            old.admin.is_some() == new.admin.is_some(),
        ),
        ("[saml]", same(&old.saml, &new.saml)),
        ("[scim]", same(&old.scim, &new.scim)),
        ("[provisioning]", same(&old.provisioning, &new.provisioning)),
        ("[audit]", same(&old.audit, &new.audit)),
        ("[telemetry]", same(&old.telemetry, &new.telemetry)),
        ("[rate_limit]", old.rate_limit == new.rate_limit),
        (
            "[[route]] or [forward_auth]",
            old.forward_auth == new.forward_auth,
        ),
        (
            "trusted_proxies",
            old.trusted_proxies == new.trusted_proxies,
        ),
        (
            "allow_insecure_http or support_contact",
            old.allow_insecure_http == new.allow_insecure_http
                && old.support_contact == new.support_contact,
        ),
    ];
    out.extend(
        sections
            .into_iter()
            .filter(|(_, unchanged)| !unchanged)
            .map(|(name, _)| name.to_owned()),
    );
    out
}

/// Validates `loaded` against the running configuration and swaps the policy in. Pure apart from
/// the swap, so it is tested without files or signals.
pub fn apply(
    shared: &SharedPolicy,
    running: &Config,
    loaded: Result<Config, Diagnostics>,
) -> Result<(), ReloadRefused> {
    let new = loaded.map_err(|d| ReloadRefused::Invalid(d.to_string()))?;
    let changed = restart_only_changes(running, &new);
    if !changed.is_empty() {
        return Err(ReloadRefused::NeedsRestart(changed.join(", ")));
    }
    shared.store(Arc::new(PolicySnapshot::from_config(&new)));
    Ok(())
}

/// Reloads from `path`, logging the outcome and counting it in `metrics`.
pub fn reload_file(
    shared: &SharedPolicy,
    running: &Config,
    path: &Path,
    why: &str,
    metrics: &Metrics,
    now: UnixTime,
) {
    match apply(shared, running, config::load_file(path)) {
        Ok(()) => {
            metrics.observe_reload(Some(now));
            let snap = shared.load();
            tracing::info!(
                trigger = why,
                file = %path.display(),
                stores = snap.stores.len(),
                rules = snap.policy.rules().len(),
                "policy reloaded"
            );
        }
        Err(e) => {
            metrics.observe_reload(None);
            tracing::error!(
                trigger = why,
                file = %path.display(),
                reason = %e,
                "policy reload refused; the previous policy stays in force"
            );
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Watches for SIGHUP and for changes of the file (polled every `poll`), reloading on each.
pub fn spawn(
    shared: SharedPolicy,
    running: Arc<Config>,
    path: PathBuf,
    poll: Duration,
    metrics: Metrics,
    clock: SharedClock,
) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file change only");
                None
            }
        };
        let mut last = modified(&path);
        let mut tick = tokio::time::interval(poll);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = hangup => {
                    last = modified(&path);
                    reload_file(&shared, &running, &path, "SIGHUP", &metrics, clock.now());
                }
                _ = tick.tick() => {
                    let now = modified(&path);
                    if now.is_some() && now != last {
                        last = now;
                        reload_file(&shared, &running, &path, "file changed", &metrics, clock.now());
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Environment;

    struct NoEnv;
    impl Environment for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
        fn read_file(&self, _: &Path) -> std::io::Result<String> {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }

    fn text(rules: &str, hash: &str) -> String {
        format!(
            r#"
public_url = "https://sso.example.com"
[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"
[[bigcommerce]]
id = "main"
store_hash = "{hash}"
access_token = "t"
client_id = "c"
client_secret = "s"
[[store]]
id = "us"
name = "US"
bigcommerce = "main"
url = "https://us.example.com"
{rules}
"#
        )
    }

    fn load(t: &str) -> Result<Config, Diagnostics> {
        config::load_str(t, "storegate.toml", &NoEnv)
    }

    const ONE: &str = "[[rule]]\nname = \"one\"\nstores = [\"*\"]\nrole = \"a\"\n";
    const TWO: &str = "[[rule]]\nname = \"two\"\nstores = [\"us\"]\nrole = \"b\"\n";

    fn names(shared: &SharedPolicy) -> Vec<String> {
        shared
            .load()
            .policy
            .rules()
            .iter()
            .map(|r| r.name.clone())
            .collect()
    }

    #[test]
    fn a_valid_file_replaces_the_policy() {
        let running = load(&text(ONE, "abc")).unwrap();
        let shared: SharedPolicy =
            Arc::new(ArcSwap::from_pointee(PolicySnapshot::from_config(&running)));
        apply(&shared, &running, load(&text(TWO, "abc"))).unwrap();
        assert_eq!(names(&shared), ["two"]);
    }

    #[test]
    fn an_invalid_file_is_refused_with_its_diagnostics_and_the_old_policy_stays() {
        let running = load(&text(ONE, "abc")).unwrap();
        let shared: SharedPolicy =
            Arc::new(ArcSwap::from_pointee(PolicySnapshot::from_config(&running)));
        let broken = text(
            "[[rule]]\nname = \"bad\"\nstores = [\"nowhere\"]\nrole = \"a\"\n",
            "abc",
        );
        let err = apply(&shared, &running, load(&broken)).unwrap_err();
        assert!(
            matches!(&err, ReloadRefused::Invalid(d) if d.contains("names store \"nowhere\", which is not configured")),
            "{err}"
        );
        assert_eq!(names(&shared), ["one"]);
    }

    #[test]
    fn a_change_that_needs_a_restart_is_refused_and_the_old_policy_stays() {
        let running = load(&text(ONE, "abc")).unwrap();
        let shared: SharedPolicy =
            Arc::new(ArcSwap::from_pointee(PolicySnapshot::from_config(&running)));
        let err = apply(&shared, &running, load(&text(TWO, "xyz"))).unwrap_err();
        assert_eq!(err, ReloadRefused::NeedsRestart("[[bigcommerce]]".into()));
        assert_eq!(names(&shared), ["one"]);
    }

    #[test]
    fn a_change_to_a_section_read_once_at_start_is_refused_not_silently_ignored() {
        let running = load(&text(ONE, "abc")).unwrap();
        let shared: SharedPolicy =
            Arc::new(ArcSwap::from_pointee(PolicySnapshot::from_config(&running)));
        let edits = [
            (
                "[provisioning]\nreconcile_interval = \"5m\"\n",
                "[provisioning]",
            ),
            (
                "[telemetry]\notlp_endpoint = \"http://collector:4318\"\n",
                "[telemetry]",
            ),
            ("trusted_proxies = [\"10.0.0.0/8\"]\n", "trusted_proxies"),
            ("[rate_limit]\nper_address_per_minute = 0\n", "[rate_limit]"),
        ];
        for (edit, section) in edits {
            // Top-level keys must come before the first table.
            let changed = if edit.starts_with('[') {
                text(&format!("{TWO}{edit}"), "abc")
            } else {
                format!("{edit}{}", text(TWO, "abc"))
            };
            let loaded = load(&changed);
            assert!(loaded.is_ok(), "{edit}: the edited file is valid");
            let err = apply(&shared, &running, loaded).unwrap_err();
            assert_eq!(err, ReloadRefused::NeedsRestart(section.into()), "{edit}");
            assert_eq!(names(&shared), ["one"], "{edit}");
        }
    }

    const ADMINS: &str = "[admin]\nname = \"it-admins\"\ngroups_any = [\"storegate-admins\"]\n";

    fn admin_rule(shared: &SharedPolicy) -> Option<crate::policy::admin::AdminRule> {
        shared.load().admin.clone()
    }

    #[test]
    fn the_admin_rule_reloads_with_the_policy_but_adding_or_removing_it_needs_a_restart() {
        let running = load(&text(&format!("{ONE}{ADMINS}"), "abc")).unwrap();
        let shared: SharedPolicy =
            Arc::new(ArcSwap::from_pointee(PolicySnapshot::from_config(&running)));
        let before = admin_rule(&shared).expect("an admin rule");
        let other = ADMINS
            .replace("it-admins", "helpdesk")
            .replace("storegate-admins", "helpdesk-leads");
        apply(
            &shared,
            &running,
            load(&text(&format!("{TWO}{other}"), "abc")),
        )
        .unwrap();
        let after = admin_rule(&shared).expect("an admin rule");
        assert_ne!(before, after);
        assert_eq!(
            after,
            load(&text(&format!("{TWO}{other}"), "abc"))
                .unwrap()
                .admin
                .unwrap()
        );
        assert_eq!(names(&shared), ["two"]);
        let err = apply(&shared, &running, load(&text(ONE, "abc"))).unwrap_err();
        assert_eq!(
            err,
            ReloadRefused::NeedsRestart("[admin] added or removed".into())
        );
        assert_eq!(admin_rule(&shared), Some(after), "the running rule stays");
    }

    #[tokio::test]
    async fn the_watcher_reloads_when_the_file_changes_and_keeps_the_policy_when_it_breaks() {
        let dir = std::env::temp_dir().join(format!("storegate-reload-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("storegate.toml");
        std::fs::write(&path, text(ONE, "abc")).unwrap();
        let running = Arc::new(config::load_file(&path).unwrap());
        let shared: SharedPolicy =
            Arc::new(ArcSwap::from_pointee(PolicySnapshot::from_config(&running)));
        let metrics = Metrics::new().unwrap();
        let clock: SharedClock = Arc::new(crate::clock::ManualClock::at(1_800_000_000));
        spawn(
            shared.clone(),
            running,
            path.clone(),
            Duration::from_millis(20),
            metrics.clone(),
            clock,
        );
        // Each version of the file gets its own modification time (set, not waited for: file
        // times can be coarse) and arrives by rename, so the watcher reads it whole.
        let next = dir.join("next.toml");
        let mut stamp = 1_700_000_000u64;
        let mut replace = |body: &str| {
            stamp += 1;
            std::fs::write(&next, body).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&next)
                .and_then(|f| f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(stamp)))
                .unwrap();
            std::fs::rename(&next, &path).unwrap();
        };
        let bound = std::time::Instant::now() + Duration::from_secs(10);
        let past_bound = || std::time::Instant::now() > bound;
        // The watcher notes the file's time when its task first runs, which may be after a
        // change: until it reloads, the change is made again (this runtime has one thread, so
        // no reload runs between the look and the write).
        while names(&shared) != ["two"] {
            assert!(!past_bound(), "never reloaded: {:?}", names(&shared));
            replace(&text(TWO, "abc"));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let refused = || {
            metrics
                .render()
                .unwrap()
                .contains("storegate_config_reloads_total{result=\"refused\"} 1")
        };
        replace("this is not toml [");
        while !refused() {
            assert!(!past_bound(), "the broken file was never read");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(names(&shared), ["two"], "the broken file is refused");
        let text = metrics.render().unwrap();
        assert!(
            text.contains("storegate_config_reloads_total{result=\"applied\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("storegate_config_reloads_total{result=\"refused\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("storegate_config_last_reload_success_timestamp_seconds 1800000000"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
