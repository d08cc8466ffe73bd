//! The `storegate` command line: serve | check | demo | explain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use storegate::clock::{SharedClock, SystemClock};
use storegate::config::{self, Config};

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
    },
    /// Run the gateway with a development OpenID provider and simulated storefronts (no setup).
    Demo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
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
            init_tracing(json_logs);
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
            run(async move { storegate::server::serve(cfg, clock(), Some(config)).await })
        }
        Command::Demo { listen } => {
            init_tracing(false);
            run(async move { storegate::demo::run(&listen).await })
        }
    }
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

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOREGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load_file(path) {
        Ok(cfg) => {
            print!("{}", registration_summary(path, &cfg));
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
    if cfg.allow_insecure_http {
        let _ = writeln!(
            out,
            "warning: allow_insecure_http is on: cookies are sent without Secure. Development only."
        );
    }
    let _ = writeln!(
        out,
        "\nOpenText Access Manager (Applications > OAuth clients), per IdP:"
    );
    for idp in &cfg.idps {
        let _ = writeln!(out, "  [{}] {}", idp.id, idp.display_name);
        let _ = writeln!(
            out,
            "    Login redirect URI:  {}",
            idp.redirect_uri(&cfg.public_url)
        );
        let _ = writeln!(
            out,
            "    Logout redirect URI: {}/signed-out",
            cfg.base_url()
        );
        let _ = writeln!(
            out,
            "    Grant: authorization code (PKCE S256); ID Token Signed Response Algorithm: RS256"
        );
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
    out
}
