//! Where the access report's inputs come from: the trail's files (rotated ones included), the
//! SCIM store, and the BigCommerce customers bound to a subject.

use std::io::BufRead;
use std::path::PathBuf;

use super::{BoundCustomer, LastLaunch, Launches, Report, Windows};
use crate::audit::postgres::AuditStoreError;
use crate::bigcommerce::api::{AccountError, Customers, HttpCustomers};
use crate::clock::UnixTime;
use crate::config::{AuditTarget, Config};
use crate::provisioning::scim::ScimData;

/// The trail's files, oldest first: the rotated ones, then the current one. Stdout: none.
pub fn trail_files(cfg: &Config) -> Vec<PathBuf> {
    match &cfg.audit {
        AuditTarget::File(p) => {
            let mut files = crate::audit::rotate::rotated_files(p).unwrap_or_default();
            files.push(p.clone());
            files
        }
        _ => Vec::new(),
    }
}

/// Folds one audit line into `into` when it is an allowed launch (chained or not; anything
/// else, a broken line included, is not a launch and is skipped: `audit verify` judges lines).
pub fn fold_line(line: &[u8], into: &mut Launches) {
    #[derive(serde::Deserialize)]
    struct Ev<'a> {
        time: &'a str,
        event: &'a str,
        outcome: &'a str,
        subject: Option<String>,
        store: Option<String>,
        idp: Option<String>,
        email: Option<String>,
        role: Option<String>,
        rule: Option<String>,
    }
    let Ok(ev) = serde_json::from_slice::<Ev<'_>>(line) else {
        return;
    };
    if ev.event != "launch" || ev.outcome != "allow" {
        return;
    }
    let (Some(subject), Some(store)) = (ev.subject, ev.store) else {
        return;
    };
    let Ok(at) =
        time::OffsetDateTime::parse(ev.time, &time::format_description::well_known::Rfc3339)
    else {
        return;
    };
    let at = at.unix_timestamp();
    let entry = into.entry((subject, store));
    let newer = LastLaunch {
        at,
        idp: ev.idp,
        email: ev.email,
        role: ev.role,
        rule: ev.rule,
    };
    match entry {
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(newer);
        }
        std::collections::btree_map::Entry::Occupied(mut o) => {
            if at >= o.get().at {
                o.insert(newer);
            }
        }
    }
}

/// The last allowed launch per (subject, store) in `files`. A missing file is skipped (a
/// gateway that never launched anything has not created it yet).
pub fn launches_from_files(files: &[PathBuf]) -> std::io::Result<Launches> {
    let mut out = Launches::new();
    for f in files {
        let file = match std::fs::File::open(f) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot read the audit file {}: {e}", f.display()),
                ));
            }
        };
        for line in std::io::BufReader::new(file).split(b'\n') {
            fold_line(&line?, &mut out);
        }
    }
    Ok(out)
}

/// The last allowed launch per (subject, store) in the central table: every replica's events.
/// PostgreSQL picks each pair's newest line (times are RFC 3339 UTC, so text order is time
/// order); [`fold_line`] reads it exactly as it reads a file's line.
pub async fn launches_from_table(url: &str) -> Result<Launches, AuditStoreError> {
    let client = crate::audit::postgres::connect(url).await?;
    let rows = client
        .query(
            "SELECT DISTINCT ON (l->>'subject', l->>'store') line \
             FROM (SELECT line, time, line::jsonb AS l FROM audit_events WHERE event = 'launch') e \
             WHERE l->>'outcome' = 'allow' AND l ? 'subject' AND l ? 'store' \
             ORDER BY l->>'subject', l->>'store', time DESC",
            &[],
        )
        .await
        .map_err(AuditStoreError::Read)?;
    let mut out = Launches::new();
    for row in rows {
        let line: String = row.try_get(0).map_err(AuditStoreError::Read)?;
        fold_line(line.as_bytes(), &mut out);
    }
    Ok(out)
}

/// Where the last launches come from: the central table when `[audit] postgres_url` is set
/// (fleet-wide), this replica's files otherwise or when the table cannot be read. Returns the
/// launches, the source's name for the report, and warnings.
pub async fn last_launches(
    table: Option<&crate::audit::postgres::SinkConfig>,
    files: &[PathBuf],
) -> (Launches, String, Vec<String>) {
    let mut warnings = Vec::new();
    if let Some(sink) = table {
        match launches_from_table(sink.url.expose()).await {
            Ok(l) => return (l, "the audit table (every replica)".to_owned(), warnings),
            Err(e) => warnings.push(format!(
                "the audit table was not read ({e}); last launches come from this replica's files"
            )),
        }
    }
    if files.is_empty() {
        warnings.push("the audit trail goes to stdout (`audit.file = \"-\"`): no last launches; every grant shows as dormant".to_owned());
    }
    let launches = launches_from_files(files).unwrap_or_else(|e| {
        warnings.push(format!("{e}; last launches are missing"));
        Launches::new()
    });
    (launches, "this replica's audit files".to_owned(), warnings)
}

/// Every customer carrying `storegate_subject`, on every account. An account whose attribute
/// does not exist yet has no bound customer (nothing is created here).
pub async fn bound_customers(cfg: &Config) -> Result<Vec<BoundCustomer>, AccountError> {
    let mut out = Vec::new();
    for account in &cfg.bigcommerce {
        let fail = |e| AccountError::store(&account.id, e);
        let client = HttpCustomers::new(account).map_err(fail)?;
        let Some(attribute) = client.subject_attribute_id(false).await.map_err(fail)? else {
            continue;
        };
        let subjects: std::collections::HashMap<u64, String> = client
            .subject_values(attribute)
            .await
            .map_err(fail)?
            .into_iter()
            .collect();
        let mut ids: Vec<u64> = subjects.keys().copied().collect();
        ids.sort_unstable();
        for chunk in ids.chunks(250) {
            for c in client.find_by_ids(chunk).await.map_err(fail)? {
                let subject = subjects.get(&c.id).cloned().unwrap_or_default();
                out.push((account.id.clone(), c, subject));
            }
        }
    }
    out.sort_by(|a, b| (&a.0, a.1.id).cmp(&(&b.0, b.1.id)));
    Ok(out)
}

/// Reads every source and builds the report. A source that cannot be read leaves a warning
/// (the report says it is partial) rather than no report at all.
pub async fn gather(
    cfg: &Config,
    scim: Result<ScimData, String>,
    trail: &[PathBuf],
    now: UnixTime,
    w: Windows,
) -> Report {
    let mut warnings = Vec::new();
    let scim = scim.unwrap_or_else(|e| {
        warnings.push(format!("SCIM data not read ({e}): no `grant` rows, and every launcher counts as having no SCIM record"));
        ScimData::default()
    });
    let (launches, launches_from, trouble) =
        last_launches(cfg.audit_postgres.as_ref(), trail).await;
    warnings.extend(trouble);
    let bound = bound_customers(cfg).await.unwrap_or_else(|e| {
        warnings.push(format!(
            "BigCommerce customers not read ({e}): no `orphan_customer` rows"
        ));
        Vec::new()
    });
    let mut report = super::build(cfg, &scim, &launches, &bound, now, w);
    report.warnings = warnings;
    report.launches_from = launches_from;
    report
}

/// `30d`, `14d`, `12h`: a window in seconds (humantime's syntax).
pub fn parse_window(raw: &str) -> Result<i64, String> {
    humantime::parse_duration(raw)
        .map(|d| d.as_secs() as i64)
        .map_err(|e| format!("{raw:?} is not a duration like \"30d\": {e}"))
}
