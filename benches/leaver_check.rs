//! The SCIM leaver check every sign-in and launch makes, with 10,000 SCIM users and 1,000
//! tombstones: the service's indexed lookup against the reference scan over every user
//! (`ScimData::is_deprovisioned`), for a person found active, a leaver, and someone SCIM does not
//! know. Plain `harness = false` timing.
//!
//! Run: `cargo bench --bench leaver_check` (or `make bench`). Prints the median and p99 per check.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it times nothing and checks that the
//! indexed lookup gives the reference scan's answer, and the expected one, on the same directory:
//! by subject, by email, by alias, in other letter case, for active users, leavers, tombstones and
//! strangers.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{Value, json};
use storegate::clock::ManualClock;
use storegate::provisioning::scim::ScimData;
use storegate::provisioning::scim::ScimService;
use storegate::provisioning::scim::store::{Kind, ScimStore, StoreError};

const USERS: usize = 10_000;
const TOMBSTONES: usize = 1_000;
const ROUNDS: usize = 2_000;

/// A store that starts full (what a gateway loads at start from its file store).
struct Preloaded(Vec<(Kind, Value)>);

#[async_trait]
impl ScimStore for Preloaded {
    async fn load(&self) -> Result<Vec<(Kind, Value)>, StoreError> {
        Ok(self.0.clone())
    }
    async fn put(&self, _: Kind, _: &str, _: &Value) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete(&self, _: Kind, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

fn directory() -> Vec<(Kind, Value)> {
    let user = |i: usize| {
        json!({
            "id": format!("u-{i}"),
            "externalId": format!("sub-{i}"),
            "userName": format!("user{i}@corp.example"),
            "emails": [{"value": format!("user{i}@corp.example"), "primary": true},
                       {"value": format!("u{i}@alias.example")}],
            "active": !i.is_multiple_of(10),
        })
    };
    let tombstone = |i: usize| {
        json!({"id": format!("t-{i}"), "externalId": format!("gone-{i}"),
               "userName": format!("gone{i}@corp.example")})
    };
    (0..USERS)
        .map(|i| (Kind::User, user(i)))
        .chain((0..TOMBSTONES).map(|i| (Kind::Tombstone, tombstone(i))))
        .collect()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    if std::env::args().any(|a| a == "--bench") {
        runtime.block_on(run());
    } else {
        runtime.block_on(check());
    }
}

/// The service over the directory, and the reference scan over the same.
async fn open() -> (ScimService, ScimData) {
    let items = directory();
    let data = ScimData::from_resources(items.clone());
    let service = ScimService::open(
        Arc::new(Preloaded(items)),
        Arc::new(ManualClock::at(1_800_000_000)),
    )
    .await
    .expect("open the SCIM service");
    (service, data)
}

/// Correctness, not speed: the indexed lookup agrees with the scan everywhere it is asked, and
/// both give the expected answer where the directory fixes it.
async fn check() {
    let (service, data) = open().await;
    let mut asked = 0;
    let mut ask = async |subject: &str, email: Option<&str>, expected: Option<bool>| {
        let indexed = service
            .is_deprovisioned(subject, email)
            .await
            .expect("the file-like store answers");
        let scanned = data.is_deprovisioned(subject, email);
        assert_eq!(
            indexed, scanned,
            "indexed lookup and scan disagree for {subject:?} / {email:?}"
        );
        if let Some(want) = expected {
            assert_eq!(indexed, want, "{subject:?} / {email:?}");
        }
        asked += 1;
    };
    // Fixed by the directory: every tenth user is disabled; tombstones are leavers.
    ask("sub-4242", Some("user4242@corp.example"), Some(false)).await;
    ask("sub-4240", Some("user4240@corp.example"), Some(true)).await;
    ask("sub-4240", None, Some(true)).await;
    ask("gone-7", None, Some(true)).await;
    ask("nobody", Some("nobody@corp.example"), Some(false)).await;
    ask("nobody", None, Some(false)).await;
    // Whatever the rules for addresses and letter case, both ways must answer alike.
    for i in (0..USERS).step_by(331).chain([0, 10, 4240, USERS - 1]) {
        let (sub, mail, alias) = (
            format!("sub-{i}"),
            format!("user{i}@corp.example"),
            format!("u{i}@alias.example"),
        );
        ask(&sub, None, Some(i % 10 == 0)).await;
        ask(&sub, Some(&mail), Some(i % 10 == 0)).await;
        ask("a-new-subject", Some(&mail), None).await;
        ask("a-new-subject", Some(&alias), None).await;
        ask("a-new-subject", Some(&mail.to_uppercase()), None).await;
        ask(&sub, Some("someone-else@corp.example"), None).await;
    }
    for i in (0..TOMBSTONES).step_by(53) {
        ask(&format!("gone-{i}"), None, Some(true)).await;
        ask(
            "a-new-subject",
            Some(&format!("gone{i}@corp.example")),
            None,
        )
        .await;
    }
    println!(
        "leaver check: {asked} questions, the indexed lookup answers as the scan does (timings: `cargo bench --bench leaver_check`)"
    );
}

async fn run() {
    let (service, data) = open().await;
    println!(
        "leaver check, {USERS} SCIM users + {TOMBSTONES} tombstones, {ROUNDS} checks per row (median / p99 per check)"
    );
    let people: [(&str, &str, Option<&str>, bool); 3] = [
        (
            "active user",
            "sub-4242",
            Some("user4242@corp.example"),
            false,
        ),
        (
            "leaver (disabled)",
            "sub-4240",
            Some("user4240@corp.example"),
            true,
        ),
        (
            "unknown to SCIM",
            "nobody",
            Some("nobody@corp.example"),
            false,
        ),
    ];
    for (what, subject, email, leaver) in people {
        let mut indexed = Vec::with_capacity(ROUNDS);
        let mut scanned = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let answer = service
                .is_deprovisioned(black_box(subject), black_box(email))
                .await
                .expect("the file-like store answers");
            indexed.push(t.elapsed().as_nanos() as u64);
            assert_eq!(answer, leaver, "{what}");
            let t = Instant::now();
            let answer = data.is_deprovisioned(black_box(subject), black_box(email));
            scanned.push(t.elapsed().as_nanos() as u64);
            assert_eq!(answer, leaver, "{what}");
        }
        let (im, ip) = stats(&mut indexed);
        let (sm, sp) = stats(&mut scanned);
        println!(
            "  {what:<18} indexed {:>9} / {:>9}   scan {:>9} / {:>9}   ({:.0}x at the median)",
            fmt(im),
            fmt(ip),
            fmt(sm),
            fmt(sp),
            sm as f64 / im.max(1) as f64
        );
    }
}

fn stats(v: &mut [u64]) -> (u64, u64) {
    v.sort_unstable();
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn fmt(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}
