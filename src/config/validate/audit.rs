//! Validation of `[audit]`: destination, hash chain, writer id, rotation (issue 13).

use super::super::AuditTarget;
use super::super::diag::key;
use super::super::file::FileConfig;
use super::Checker;
use crate::audit::{RotatePolicy, TrailConfig, valid_writer_char};

/// The smallest `rotate_size`: below it, a handful of events would make a file.
const MIN_ROTATE_SIZE: u64 = 1024;

pub(super) fn audit(c: &mut Checker<'_>, f: &FileConfig) -> (AuditTarget, TrailConfig) {
    let a = &f.audit;
    let at = |k: &str| [key("audit"), key(k)];
    let target = match a.file.as_str() {
        "-" => AuditTarget::Stdout,
        "" => {
            c.error(
                &at("file"),
                "`audit.file` is empty: use \"-\" for stdout or a path",
            );
            AuditTarget::Stdout
        }
        p => AuditTarget::File(p.into()),
    };
    let writer_id = match a.writer_id.as_deref() {
        None => None,
        Some(id) if id.is_empty() || id.len() > 64 || !id.chars().all(valid_writer_char) => {
            c.error(
                &at("writer_id"),
                format!("`audit.writer_id` {id:?}: use 1 to 64 letters, digits, `.`, `_`, `-` or `:` (e.g. \"gw-eu-1\"); every replica needs its own"),
            );
            None
        }
        Some(id) => Some(id.to_owned()),
    };
    let max_bytes = a.rotate_size.as_deref().and_then(|raw| match parse_size(raw) {
        Some(n) if n >= MIN_ROTATE_SIZE => Some(n),
        Some(n) => {
            c.error(
                &at("rotate_size"),
                format!("`audit.rotate_size` is {n} bytes: use at least {MIN_ROTATE_SIZE} (e.g. \"100MiB\")"),
            );
            None
        }
        None => {
            c.error(
                &at("rotate_size"),
                format!("`audit.rotate_size`: {raw:?} is not a size like \"100MiB\", \"500MB\" or \"1048576\""),
            );
            None
        }
    });
    let max_age = a.rotate_every.as_deref().and_then(|raw| {
        let d = c.duration(&at("rotate_every"), raw)?;
        if d < std::time::Duration::from_secs(60) {
            c.error(
                &at("rotate_every"),
                format!("`audit.rotate_every` is {raw}: use at least \"1m\" (e.g. \"1d\")"),
            );
            return None;
        }
        Some(d)
    });
    if target == AuditTarget::Stdout {
        for k in ["rotate_size", "rotate_every"] {
            let set = match k {
                "rotate_size" => a.rotate_size.is_some(),
                _ => a.rotate_every.is_some(),
            };
            if set {
                c.error(
                    &at(k),
                    format!("`audit.{k}` needs `audit.file`: stdout cannot be rotated"),
                );
            }
        }
    }
    let trail = TrailConfig {
        chain: a.chain.unwrap_or(true),
        writer_id,
        rotate: RotatePolicy { max_bytes, max_age },
    };
    (target, trail)
}

/// `postgres_url`, `spool_file`, `spool_max`: the central sink (issue 13).
pub(super) fn postgres(
    c: &mut Checker<'_>,
    f: &FileConfig,
    target: &AuditTarget,
    chain: bool,
) -> Option<crate::audit::postgres::SinkConfig> {
    let a = &f.audit;
    let at = |k: &str| [key("audit"), key(k)];
    let url = c.secret(
        &[key("audit")],
        "postgres_url",
        &a.postgres_url,
        None,
        false,
    )?;
    // The URL carries a password: the messages name the problem, never the value.
    let shape_ok =
        url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://");
    if !shape_ok {
        c.error(
            &at("postgres_url"),
            "`audit.postgres_url` must be a URL like postgres://storegate_app:PASSWORD@db.example.com:5432/audit",
        );
        return None;
    }
    match url.expose().parse::<tokio_postgres::Config>() {
        Ok(pg) if pg.get_hosts().is_empty() => {
            c.error(
                &at("postgres_url"),
                "`audit.postgres_url` names no host (postgres://user:PASSWORD@HOST:5432/DB)",
            );
            return None;
        }
        Ok(_) => {}
        Err(_) => {
            c.error(
                &at("postgres_url"),
                "`audit.postgres_url` is not a valid PostgreSQL URL (postgres://user:PASSWORD@host:5432/db)",
            );
            return None;
        }
    }
    if !chain {
        c.error(
            &at("postgres_url"),
            "`audit.postgres_url` needs `audit.chain = true`: the table is keyed by each writer's chain (writer, seq)",
        );
    }
    let spool_file = match (&a.spool_file, target) {
        (Some(p), _) => p.into(),
        (None, AuditTarget::File(p)) => format!("{}.pgspool", p.display()).into(),
        (None, AuditTarget::Stdout) => "storegate-audit.pgspool".into(),
    };
    let spool_max = match a.spool_max.as_deref() {
        None => crate::audit::postgres::DEFAULT_SPOOL_MAX,
        Some(raw) => match parse_size(raw) {
            Some(n) if n >= MIN_ROTATE_SIZE => n,
            _ => {
                c.error(
                    &at("spool_max"),
                    format!("`audit.spool_max`: {raw:?} is not a size of at least 1024 bytes like \"64MiB\""),
                );
                crate::audit::postgres::DEFAULT_SPOOL_MAX
            }
        },
    };
    Some(crate::audit::postgres::SinkConfig {
        url,
        spool_file,
        spool_max,
    })
}

/// `"100MiB"`, `"500MB"`, `"64k"`, `"1048576"`: bytes. Units are case-insensitive; `K`/`KB` are
/// 1000, `KiB` is 1024 (likewise M, G).
pub(crate) fn parse_size(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("100MiB"), Some(100 << 20));
        assert_eq!(parse_size("500 MB"), Some(500_000_000));
        assert_eq!(parse_size("64k"), Some(64_000));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("10 parsecs"), None);
        assert_eq!(parse_size("99999999999999999999GiB"), None);
    }
}
