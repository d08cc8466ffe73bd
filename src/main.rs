//! The `storegate` command line: serve | check | demo | explain | saml-metadata | certs |
//! reconcile | audit verify.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use storegate::clock::{SharedClock, SystemClock};
use storegate::config::{self, Config};

// mimalloc instead of the system allocator: glibc's malloc/free were about a tenth of the
// gateway's CPU per launch under load (perf, `make bench`), mimalloc's thread-local free lists
// are the usual cure for a request-per-task server. Its `override` feature (Cargo.toml) makes it
// the process's `malloc`/`free` too, so libxml2, libxmlsec and OpenSSL allocate from it: glibc's
// malloc and free were about 12% of the instructions of a SAML verification (callgrind,
// examples/saml_acs_cost.rs: 4.66M -> 4.23M per sign-in). One allocator for the whole process
// also means no C string can be freed by the wrong one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "storegate",
    version,
    about = "SSO gateway between OpenText Access Manager and BigCommerce"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum WebhooksAction {
    /// Register each account's hooks (`/v3/hooks`) with its secret header: create the missing,
    /// re-enable the ones BigCommerce deactivated, delete ours that are no longer wanted.
    Sync {
        #[arg(short, long, env = "STOREGATE_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file.
        #[arg(short, long, env = "STOREGATE_CONFIG")]
        config: PathBuf,
        /// Log as JSON lines (for log shippers).
        #[arg(long)]
        json_logs: bool,
    },
    /// Validate a configuration file and print what to register in OpenText and BigCommerce.
    Check {
        #[arg(short, long, env = "STOREGATE_CONFIG")]
        config: PathBuf,
        /// Also write the onboarding sheet for the Access Manager team to this file (redirect
        /// and logout URIs, SP metadata URL, attributes to release, algorithms): HTML for
        /// `.html`, Markdown otherwise. Secrets are never written.
        #[arg(long, value_name = "FILE")]
        onboarding: Option<PathBuf>,
    },
    /// Live checks before serving (IdP discovery and signing certificates, BigCommerce token,
    /// scopes and store clock, Redis): one PASS/FAIL line each with its fix; exit 1 on any
    /// failure. Read-only: safe in a Kubernetes init container.
    Doctor {
        #[arg(short, long, env = "STOREGATE_CONFIG")]
        config: PathBuf,
    },
    /// Run the gateway with a development OpenID provider and simulated storefronts (no setup).
    /// Only in builds with the `devkit` feature (`make demo`); production builds leave it out.
    Demo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// BigCommerce webhooks (issue 13).
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// Compare SCIM users and groups + policy with BigCommerce and apply the difference (issue 5).
    Reconcile {
        #[arg(short, long, env = "STOREGATE_CONFIG")]
        config: PathBuf,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print every store with allow/deny, the rule and template that decided it and what the grant
    /// carries, for an identity.
    Explain {
        #[arg(short, long, env = "STOREGATE_CONFIG")]
        config: PathBuf,
        /// JSON file with the identity's claims (as the IdP would release them).
        #[arg(long)]
        claims: PathBuf,
        /// The IdP id the claims come from. Default: the first configured.
        #[arg(long)]
        idp: Option<String>,
        /// Only this store.
        #[arg(long)]
        store: Option<String>,
        /// Evaluate at this moment (RFC 3339 or Unix seconds) instead of now.
        #[arg(long)]
        at: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the SAML service provider metadata (what to register in Access Manager).
    SamlMetadata {
        #[arg(short, long, env = "STOREGATE_CONFIG")]
        config: PathBuf,
    },
    /// Write a fresh SAML SP key and self-signed certificate (sp.key, sp.crt) into a folder.
    Certs {
        /// Folder to write into. Default `certs`.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Certificate common name. Default `storegate SAML SP`.
        #[arg(long, default_value = "storegate SAML SP")]
        cn: String,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// The access review (issue 13): one row per person x store x entitlement, with the rule,
    /// expiry, last launch (from the trail), dormant and expiring flags, people with access but
    /// no SCIM record, and BigCommerce customers bound to subjects SCIM no longer knows.
    AccessReport {
        #[arg(short, long, env = "STOREGATE_CONFIG")]
        config: PathBuf,
        /// `csv` (an Identity Governance review campaign import) or `json`.
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
        /// A grant not launched for this long is dormant.
        #[arg(long, default_value = "30d")]
        dormant: String,
        /// A grant ending within this long is expiring.
        #[arg(long, default_value = "14d")]
        expiring: String,
        /// The control-panel report instead (issue 12): one row per person x store of every
        /// `[[account]]`, with the expected permission sets, missing, excess and high-risk
        /// permissions (flagged rows first) and the unmanaged users. Reads through the
        /// reconciler's 70-per-hour budget; a spent budget fails the report (exit 1).
        #[arg(long)]
        control_panel: bool,
    },
    /// The audit trail (issue 13).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of every writer in FILE...: exit 0 with a summary when intact, 1 with
    /// FILE:LINE of the first edited, deleted, inserted or reordered event otherwise.
    Verify {
        /// Audit files, in any order (rotated files and several replicas' files together).
        #[arg(required_unless_present = "postgres", conflicts_with = "postgres")]
        files: Vec<PathBuf>,
        /// Verify the PostgreSQL table `audit_events` instead of files (a URL like
        /// postgres://auditor@db/audit; a role with SELECT is enough). Line N in a message is
        /// the table's row N in (writer, seq) order.
        #[arg(long, value_name = "URL", env = "STOREGATE_AUDIT_DB")]
        postgres: Option<String>,
        /// Skip events written without a chain (`chain = false`) instead of failing on them.
        #[arg(long)]
        allow_unchained: bool,
        /// WRITER:SEQ:HASH known from elsewhere (a summary kept earlier, the head the gateway
        /// logs on rotation): the trail must hold that event unchanged. Catches a cut-off tail.
        #[arg(long = "anchor", value_name = "WRITER:SEQ:HASH")]
        anchors: Vec<storegate::audit::verify::Anchor>,
    },
    /// Create or upgrade the PostgreSQL table `audit_events` as its owner, so the gateway can run
    /// as a role that may only INSERT and SELECT (docs/audit.md, "The PostgreSQL roles").
    Migrate {
        /// A URL whose role owns the table (or may create it), like postgres://storegate_owner@db/audit.
        #[arg(long, value_name = "URL", env = "STOREGATE_AUDIT_OWNER_DB")]
        postgres: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, onboarding } => check(&config, onboarding.as_deref()),
        Command::Doctor { config } => doctor(&config),
        Command::Explain {
            config,
            claims,
            idp,
            store,
            at,
            json,
        } => storegate::explain::run(&storegate::explain::Request {
            config: &config,
            claims: &claims,
            idp: idp.as_deref(),
            store: store.as_deref(),
            at: at.as_deref(),
            json,
        }),
        Command::Serve { config, json_logs } => {
            // Configuration problems go to stderr as FILE:LINE, before logging starts: the
            // logging set-up itself depends on `[telemetry]`.
            let cfg = match config::load_file(&config) {
                Ok(c) => c,
                Err(d) => {
                    eprint!("{d}");
                    eprintln!(
                        "storegate: the configuration has {} problem(s); nothing was started",
                        d.items.len()
                    );
                    return ExitCode::FAILURE;
                }
            };
            run(async move {
                let telemetry = match &cfg.telemetry {
                    Some(t) => Some(storegate::telemetry::Telemetry::start(t)?),
                    None => None,
                };
                init_tracing(json_logs, telemetry.as_ref());
                if let Some(t) = &cfg.telemetry {
                    tracing::info!(
                        "exporting traces to {} as service {} (sample ratio {})",
                        t.traces_url,
                        t.service_name,
                        t.sample_ratio
                    );
                }
                let served = storegate::server::serve(cfg, clock(), Some(config)).await;
                // After the drain: the spans of the last requests are in the final batch.
                if let Some(t) = telemetry {
                    t.shutdown().await;
                }
                served
            })
        }
        Command::SamlMetadata { config } => saml_metadata(&config),
        Command::Certs { dir, cn, force } => certs(&dir, &cn, force),
        Command::Webhooks {
            action: WebhooksAction::Sync { config },
        } => {
            init_tracing(false, None);
            let cfg = match config::load_file(&config) {
                Ok(c) => c,
                Err(d) => {
                    eprint!("{d}");
                    return ExitCode::FAILURE;
                }
            };
            run(async move {
                let reports = storegate::bigcommerce::webhooks::sync::run(&cfg).await;
                print!(
                    "{}",
                    storegate::bigcommerce::webhooks::sync::render(&reports)
                );
                match reports.iter().find(|r| r.error.is_some()) {
                    Some(r) => Err(anyhow::anyhow!(
                        "webhooks sync failed for [[bigcommerce]] {}",
                        r.account
                    )),
                    None => Ok(()),
                }
            })
        }
        Command::Reconcile { config, dry_run } => {
            init_tracing(false, None);
            let cfg = match config::load_file(&config) {
                Ok(c) => c,
                Err(d) => {
                    eprint!("{d}");
                    return ExitCode::FAILURE;
                }
            };
            run(async move { reconcile(cfg, dry_run).await })
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    files,
                    postgres,
                    allow_unchained,
                    anchors,
                },
        } => {
            let opts = storegate::audit::verify::Options {
                allow_unchained,
                anchors,
            };
            match postgres {
                Some(url) => audit_verify_table(&url, &opts),
                None => audit_verify(&files, &opts),
            }
        }
        Command::Audit {
            command: AuditCommand::Migrate { postgres },
        } => audit_migrate(&postgres),
        Command::AccessReport {
            config,
            format,
            dormant,
            expiring,
            control_panel,
        } => {
            let cfg = match config::load_file(&config) {
                Ok(c) => c,
                Err(d) => {
                    eprint!("{d}");
                    return ExitCode::FAILURE;
                }
            };
            if control_panel {
                return run(async move { control_panel_report(cfg, &format).await });
            }
            run(async move { access_report(cfg, &format, &dormant, &expiring).await })
        }
        Command::Demo { listen } => demo(&listen),
    }
}

/// `storegate audit verify`: the summary on stdout, or the first problem as FILE:LINE on stderr.
fn audit_verify(files: &[PathBuf], opts: &storegate::audit::verify::Options) -> ExitCode {
    match storegate::audit::verify::verify(files, opts) {
        Ok(summary) => {
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("{problem}");
            eprintln!("storegate: the audit trail does not verify");
            ExitCode::FAILURE
        }
    }
}

/// `storegate audit migrate --postgres URL`: the migrations applied, or why not.
fn audit_migrate(url: &str) -> ExitCode {
    let migrated = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| Ok(rt.block_on(storegate::audit::postgres::migrate(url))?));
    match migrated {
        Ok(applied) if applied.is_empty() => {
            println!("audit_events is current; nothing to apply");
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            println!("applied {}", applied.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("storegate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `storegate audit verify --postgres URL`: the table's lines, in (writer, seq) order, checked
/// exactly as a file would be.
fn audit_verify_table(url: &str, opts: &storegate::audit::verify::Options) -> ExitCode {
    let copy = std::env::temp_dir().join(format!(
        "storegate-audit-table-{}.jsonl",
        std::process::id()
    ));
    let fetched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let lines = storegate::audit::postgres::table_lines(url).await?;
                let mut text = lines.join("\n");
                if !text.is_empty() {
                    text.push('\n');
                }
                std::fs::write(&copy, text)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", copy.display()))
            })
        });
    if let Err(e) = fetched {
        eprintln!("storegate: {e}");
        return ExitCode::FAILURE;
    }
    let code = audit_verify(std::slice::from_ref(&copy), opts);
    let _ = std::fs::remove_file(&copy);
    code
}

fn saml_metadata(path: &std::path::Path) -> ExitCode {
    let cfg = match config::load_file(path) {
        Ok(c) => c,
        Err(d) => {
            eprint!("{d}");
            return ExitCode::FAILURE;
        }
    };
    let Some(spc) = &cfg.saml else {
        eprintln!("storegate: {} has no [saml] table", path.display());
        return ExitCode::FAILURE;
    };
    let out =
        storegate::federation::saml::sp::SpKeys::from_pem(spc.key_pem.expose(), &spc.cert_pem)
            .and_then(|k| storegate::federation::saml::sp::metadata_xml(spc, &k));
    match out {
        Ok(xml) => {
            println!("{xml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("storegate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn certs(dir: &std::path::Path, cn: &str, force: bool) -> ExitCode {
    let key_path = dir.join("sp.key");
    let cert_path = dir.join("sp.crt");
    if !force && (key_path.exists() || cert_path.exists()) {
        eprintln!(
            "storegate: {} or {} exists; use --force to replace them",
            key_path.display(),
            cert_path.display()
        );
        return ExitCode::FAILURE;
    }
    let (key, cert) = match storegate::federation::saml::sp::generate_key_and_cert(cn) {
        Ok(kc) => kc,
        Err(e) => {
            eprintln!("storegate: cannot generate a key: {e}");
            return ExitCode::FAILURE;
        }
    };
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(dir)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        opts.open(&key_path)?.write_all(key.as_bytes())?;
        std::fs::write(&cert_path, cert.as_bytes())
    };
    match write() {
        Ok(()) => {
            println!(
                "wrote {} (mode 600) and {}",
                key_path.display(),
                cert_path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("storegate: cannot write into {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

async fn reconcile(cfg: Config, dry_run: bool) -> anyhow::Result<()> {
    use storegate::app::{load_scim, reconciler};
    use storegate::provisioning::render::{render_b2b, render_drift, render_plan};
    let clock = clock();
    // A writer of its own: a running gateway may append to the same file under the configured
    // id, and two writers must never share one chain.
    let mut cfg = cfg;
    let base = cfg
        .audit_trail
        .writer_id
        .clone()
        .unwrap_or_else(|| storegate::audit::default_writer_id(false));
    cfg.audit_trail.writer_id = Some(format!("{base}-reconcile-{}", std::process::id()));
    let audit = storegate::server::open_audit(&cfg)?;
    let data = load_scim(&cfg).await?;
    let now = clock.now();
    let r = reconciler(std::sync::Arc::new(cfg), audit, clock, Default::default())?;
    if dry_run {
        let preview = r.dry_run(&data, now).await?;
        print!(
            "{}{}{}{}",
            render_drift(&preview.drift),
            render_plan(&preview.plan),
            render_b2b(&preview.b2b),
            storegate::controlpanel::render::render(&preview.staff, true)
        );
        return Ok(());
    }
    let report = r.pass(&data, now).await?;
    print!(
        "{}{}{}{}",
        render_drift(&report.drift),
        render_plan(&report.plan),
        render_b2b(&report.b2b),
        storegate::controlpanel::render::render(&report.staff, false)
    );
    let (b2b_changed, b2b_failed) = report.b2b_counts();
    println!(
        "run {}: {} done, {} failed, {} calls, {} rate-limited, {} retried; B2B {} changed, {} failed",
        report.run,
        report.drain.done,
        report.drain.failed,
        report.drain.calls,
        report.drain.rate_limited,
        report.drain.retried,
        b2b_changed,
        b2b_failed
    );
    if !report.drain.stalled.is_empty() {
        anyhow::bail!(
            "BigCommerce kept failing for {:?}; the rest stays queued for the next run",
            report.drain.stalled
        );
    }
    Ok(())
}

/// `storegate access-report`: the report on stdout, what could not be read on stderr.
async fn access_report(
    cfg: Config,
    format: &str,
    dormant: &str,
    expiring: &str,
) -> anyhow::Result<()> {
    use storegate::access_review::{self as access, sources};
    let windows = access::Windows {
        dormant_secs: sources::parse_window(dormant)
            .map_err(|e| anyhow::anyhow!("--dormant: {e}"))?,
        expiring_secs: sources::parse_window(expiring)
            .map_err(|e| anyhow::anyhow!("--expiring: {e}"))?,
    };
    let scim = storegate::app::load_scim(&cfg)
        .await
        .map_err(|e| e.to_string());
    let trail = sources::trail_files(&cfg);
    let now = storegate::clock::Clock::now(&*clock());
    let report = sources::gather(&cfg, scim, &trail, now, windows).await;
    for w in &report.warnings {
        eprintln!("storegate access-report: warning: {w}");
    }
    eprintln!(
        "storegate access-report: last launches from {}",
        report.launches_from
    );
    match format {
        "json" => println!("{}", access::to_json(&report.rows)),
        _ => print!("{}", access::to_csv(&report.rows)),
    }
    Ok(())
}

/// `storegate access-report --control-panel`: the rows on stdout, how each account was read on
/// stderr; nothing on stdout when an account cannot be read in full (exit 1 with the reason).
async fn control_panel_report(cfg: Config, format: &str) -> anyhow::Result<()> {
    use storegate::controlpanel::access;
    if cfg.accounts.is_empty() {
        anyhow::bail!(
            "the configuration has no [[account]]: the control-panel report reads the Account API of each [[account]] (docs/control-panel.md)"
        );
    }
    let clock = clock();
    // Reads are not audited; the receiver is kept so nothing is reported as a stopped writer.
    let (audit, _events) = storegate::audit::AuditLog::channel();
    let Some(staff) = storegate::app::staff_reconciler(&cfg, None, audit, clock.clone())? else {
        anyhow::bail!("no [[account]] to read");
    };
    let data = storegate::app::load_scim(&cfg).await?;
    let now = storegate::clock::Clock::now(&*clock);
    let (rows, reads) = access::report(&cfg, &staff, &data, now)
        .await
        .map_err(anyhow::Error::msg)?;
    for r in &reads {
        eprintln!("storegate access-report: {}", r.describe());
    }
    match format {
        "json" => println!("{}", access::to_json(&rows)),
        _ => print!("{}", access::to_csv(&rows)),
    }
    Ok(())
}

fn clock() -> SharedClock {
    std::sync::Arc::new(SystemClock)
}

fn run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("storegate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storegate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `STOREGATE_LOG`; with `[telemetry]`, this crate's spans are also
/// exported. Each output has its own filter, so a quiet log level does not silence the traces.
fn init_tracing(json: bool, telemetry: Option<&storegate::telemetry::Telemetry>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("STOREGATE_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(storegate::telemetry::DEFAULT_LOG_FILTER)
        });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        // Same JSON as `JsonFields`, cheaper per span (see `telemetry::json_fields`).
        fmt.json()
            .fmt_fields(storegate::telemetry::json_fields::JsonSpanFields)
            .with_filter(filter)
            .boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let registry = tracing_subscriber::registry().with(fmt);
    match telemetry {
        Some(t) => registry.with(t.layer()).init(),
        None => registry.init(),
    }
}

fn doctor(path: &std::path::Path) -> ExitCode {
    let cfg = match config::load_file(path) {
        Ok(cfg) => cfg,
        Err(d) => {
            print!("{d}");
            println!(
                "FAIL configuration: {} problem(s) -> fix: run `storegate check -c {}` and correct them",
                d.items.len(),
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let mut failed = 0;
    let outcome = run(async {
        let now = clock().now();
        for c in storegate::doctor::run(&cfg, now).await {
            println!("{}", c.line());
            if !c.passed() {
                failed += 1;
            }
        }
        Ok(())
    });
    if outcome != ExitCode::SUCCESS {
        return outcome;
    }
    if failed > 0 {
        eprintln!("{failed} check(s) failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn check(path: &std::path::Path, onboarding: Option<&std::path::Path>) -> ExitCode {
    match config::load_file(path) {
        Ok(cfg) => {
            print!("{}", registration_summary(path, &cfg));
            if let Some(out) = onboarding {
                let sheet = storegate::onboarding::render_for(out, &cfg);
                if let Err(e) = std::fs::write(out, sheet) {
                    eprintln!("cannot write the onboarding sheet {}: {e}", out.display());
                    return ExitCode::FAILURE;
                }
                println!("onboarding sheet written to {}", out.display());
            }
            ExitCode::SUCCESS
        }
        Err(d) => {
            print!("{d}");
            eprintln!("{} problem(s) found", d.items.len());
            ExitCode::FAILURE
        }
    }
}

/// What IT must enter in OpenText Access Manager and BigCommerce for this configuration.
fn registration_summary(path: &std::path::Path, cfg: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: OK ({} IdP(s), {} BigCommerce account(s), {} store(s), {} template(s), {} rule(s), {} warning(s))",
        path.display(),
        cfg.idps.len(),
        cfg.bigcommerce.len(),
        cfg.stores.len(),
        cfg.policy.templates().len(),
        cfg.policy.rules().len(),
        cfg.warnings.len()
    );
    for w in &cfg.warnings {
        let _ = writeln!(out, "{}:{}: warning: {}", path.display(), w.line, w.message);
    }
    match &cfg.session.backend {
        config::SessionBackend::Memory => {
            let _ = writeln!(out, "session store: memory (this process only)");
        }
        config::SessionBackend::Redis(t) => {
            let _ = writeln!(out, "session store: redis, {}", t.summary());
        }
    }
    if cfg.allow_insecure_http {
        let _ = writeln!(
            out,
            "warning: allow_insecure_http is on: cookies are sent without Secure. Development only."
        );
    }
    let _ = writeln!(
        out,
        "\nOpenText Access Manager, per IdP (OIDC: Applications > OAuth clients; SAML: Trusted Providers):"
    );
    for idp in &cfg.idps {
        let _ = writeln!(out, "  [{}] {}", idp.id, idp.display_name);
        if let config::Protocol::Saml(s) = &idp.protocol {
            if let Some(sp) = &cfg.saml {
                let _ = writeln!(
                    out,
                    "    SAML 2.0 (Trusted Providers > Service Providers): metadata URL {}\n    entity ID {}, ACS {} (HTTP-POST); IdP entity {}",
                    sp.metadata_url, sp.entity_id, sp.acs_url, s.entity_id
                );
            }
            if s.dangerous_allow_sha1 {
                let _ = writeln!(
                    out,
                    "    warning: dangerous_allow_sha1 is on (DANGER: RSA-SHA1 accepted)"
                );
            }
            if s.allow_unsolicited {
                let _ = writeln!(
                    out,
                    "    warning: allow_unsolicited is on (DANGER: IdP-initiated responses accepted)"
                );
            }
            continue;
        }
        let _ = writeln!(
            out,
            "    Login redirect URI:  {}",
            idp.redirect_uri(&cfg.public_url)
        );
        let _ = writeln!(out, "    Logout redirect URI: {}", cfg.logout_uri());
        if let config::Protocol::Oidc(o) = &idp.protocol {
            let _ = writeln!(
                out,
                "    Back-channel logout URI: {}",
                idp.backchannel_logout_uri(&cfg.public_url)
            );
            let auth = match o.auth_method {
                config::TokenAuthMethod::ClientSecretBasic => "client_secret_basic",
                config::TokenAuthMethod::ClientSecretPost => "client_secret_post",
            };
            let _ = writeln!(
                out,
                "    Grant: authorization code (PKCE S256); ID Token Signed Response Algorithm: {} (never none)",
                o.id_token_algs.join(" or ")
            );
            let _ = writeln!(
                out,
                "    Token endpoint authentication: {auth}; scopes: {}",
                o.scopes.join(" ")
            );
        }
    }
    match &cfg.telemetry {
        // Header values are the collector's credentials: only their names are shown.
        Some(t) => {
            let names: Vec<&str> = t.headers.iter().map(|(n, _)| n.as_str()).collect();
            let _ = writeln!(
                out,
                "\nTelemetry: OTLP/HTTP traces to {} as service \"{}\", sample ratio {}, collector headers: {}",
                t.traces_url,
                t.service_name,
                t.sample_ratio,
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    format!("{} (values hidden)", names.join(", "))
                }
            );
        }
        None => {
            let _ = writeln!(out, "\nTelemetry: off (no [telemetry] otlp_endpoint)");
        }
    }
    let _ = writeln!(
        out,
        "\nBigCommerce (Settings > API > Store-level API accounts), per account:"
    );
    for a in &cfg.bigcommerce {
        let _ = writeln!(out, "  [{}] store hash {}", a.id, a.store_hash);
        let _ = writeln!(
            out,
            "    Scopes: Customers (modify), Customers login (login), Information & settings (read-only)"
        );
    }
    if !cfg.accounts.is_empty() {
        let _ = writeln!(
            out,
            "\nControl-panel users (Account settings > API accounts > account-level API account), per [[account]]:"
        );
        for a in &cfg.accounts {
            let hashes: Vec<&str> = a.stores.iter().map(|s| s.store_hash.as_str()).collect();
            let _ = writeln!(
                out,
                "  [{}] account {} stores {}",
                a.id,
                a.account_uuid,
                hashes.join(", ")
            );
            let _ = writeln!(
                out,
                "    Scopes: {}",
                storegate::config::account::ACCOUNT_SCOPES.join(", ")
            );
        }
    }
    out
}

#[cfg(feature = "devkit")]
fn demo(listen: &str) -> ExitCode {
    init_tracing(false, None);
    let listen = listen.to_owned();
    run(async move { storegate::demo::run(&listen).await })
}

/// The production build leaves the development OpenID provider and the BigCommerce simulator out
/// (the `devkit` feature); say how to get a build that has them rather than failing obscurely.
#[cfg(not(feature = "devkit"))]
fn demo(_listen: &str) -> ExitCode {
    eprintln!("{DEMO_NOT_BUILT}");
    ExitCode::from(2)
}

#[cfg(not(feature = "devkit"))]
const DEMO_NOT_BUILT: &str = "storegate: `demo` is not part of this build: the development OpenID \
provider and the BigCommerce simulator are left out of production builds. Run `make demo`, or \
build with the development kit: `cargo run --release --features devkit -- demo`.";
