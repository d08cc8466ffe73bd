//! Reading an account: every user of the account, then each store's users with their
//! permissions, in pages of [`PAGE_SIZE`](crate::bigcommerce::account_api::PAGE_SIZE). Each page
//! spends one call of the budget first; a spent budget or a 429 halts the read.

use std::collections::BTreeSet;

use super::budget::{CallBudget, Spend};
use super::model::{Member, Observed};
use crate::bigcommerce::account_api::{AccountApi, AccountApiError, STORE_PAGE_SIZE};
use crate::clock::{SharedClock, UnixTime};

/// Why a read or a step stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    /// The budget is spent, or BigCommerce answered 429: go on at `retry_at` (not a failure).
    Paused {
        retry_at: UnixTime,
    },
    /// The budget could not be consulted (Redis down): nothing is sent without it.
    Budget(String),
    Failed(AccountApiError),
}

/// Seconds to wait after a 429 without `Retry-After`.
const DEFAULT_RETRY_SECS: i64 = 60;

/// Spends one call, then runs `call`; a 429 becomes a pause.
pub async fn spend_and_call<T, F>(
    budget: &dyn CallBudget,
    account: &str,
    clock: &SharedClock,
    calls: &mut u32,
    call: F,
) -> Result<T, Halt>
where
    F: std::future::Future<Output = Result<T, AccountApiError>>,
{
    let now = clock.now();
    match budget.take(account, now).await {
        Ok(Spend::Granted) => {}
        Ok(Spend::Exhausted { retry_at }) => return Err(Halt::Paused { retry_at }),
        Err(e) => return Err(Halt::Budget(e)),
    }
    *calls += 1;
    match call.await {
        Ok(v) => Ok(v),
        Err(AccountApiError::RateLimited { retry_after_secs }) => Err(Halt::Paused {
            retry_at: now
                + retry_after_secs
                    .and_then(|s| i64::try_from(s).ok())
                    .unwrap_or(DEFAULT_RETRY_SECS),
        }),
        Err(e) => Err(Halt::Failed(e)),
    }
}

/// Reads the account's users and the users of `stores` (store hashes; the account's other stores
/// are not storegate's). `calls` counts the pages read.
pub async fn read(
    api: &AccountApi,
    budget: &dyn CallBudget,
    account: &str,
    clock: &SharedClock,
    stores: &BTreeSet<String>,
    calls: &mut u32,
) -> Result<Observed, Halt> {
    let mut out = Observed::default();
    let mut seen = SeenCursors::default();
    let mut after: Option<String> = None;
    loop {
        let page = spend_and_call(
            budget,
            account,
            clock,
            calls,
            api.account_users(after.as_deref()),
        )
        .await?;
        for u in page.items {
            out.account_users.insert(u.email.to_lowercase(), Some(u.id));
        }
        match page.next {
            Some(n) => after = Some(seen.fresh(n, "account users")?),
            None => break,
        }
    }
    for s in stores {
        out.stores.entry(s.clone()).or_default();
    }
    let mut stores_after: Option<String> = None;
    loop {
        let page = spend_and_call(
            budget,
            account,
            clock,
            calls,
            api.store_users(STORE_PAGE_SIZE, stores_after.as_deref(), None),
        )
        .await?;
        // The cursor of the edge before each store: asking `after` it for one store continues
        // that store's users alone.
        let mut before = stores_after.clone();
        for store in page.stores {
            let keep = stores.contains(&store.store_hash);
            let mut users = store.users;
            loop {
                if keep {
                    let m = out.stores.entry(store.store_hash.clone()).or_default();
                    for u in users.items.drain(..) {
                        m.insert(
                            u.email.to_lowercase(),
                            Member {
                                user_id: Some(u.id),
                                permissions: u.permissions.into_iter().collect(),
                            },
                        );
                    }
                }
                let Some(next) = users.next.clone().filter(|_| keep) else {
                    break;
                };
                let next = seen.fresh(next, &store.store_hash)?;
                let more = spend_and_call(
                    budget,
                    account,
                    clock,
                    calls,
                    api.store_users(1, before.as_deref(), Some(&next)),
                )
                .await?;
                let Some(same) = more
                    .stores
                    .into_iter()
                    .find(|s| s.store_hash == store.store_hash)
                else {
                    return Err(Halt::Failed(AccountApiError::Unexpected(format!(
                        "store {} missing from its next page of users",
                        store.store_hash
                    ))));
                };
                users = same.users;
            }
            before = Some(store.cursor);
        }
        match page.next {
            Some(n) => stores_after = Some(seen.fresh(n, "stores")?),
            None => break,
        }
    }
    Ok(out)
}

/// The cursors one read has followed. An answer that says more pages follow but hands back a
/// cursor already followed would make the read go round until the hour's budget is spent: it is
/// refused instead, as an answer storegate cannot use.
#[derive(Default)]
struct SeenCursors(std::collections::HashSet<(String, String)>);

impl SeenCursors {
    fn fresh(&mut self, cursor: String, list: &str) -> Result<String, Halt> {
        if self.0.insert((list.to_owned(), cursor.clone())) {
            Ok(cursor)
        } else {
            Err(Halt::Failed(AccountApiError::Unexpected(format!(
                "the Account API gave the same page cursor twice while listing {list}; \
                 the read stops so it does not spend the hour's budget going round"
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_followed_twice_in_one_list_stops_the_read() {
        let mut seen = SeenCursors::default();
        assert_eq!(seen.fresh("c1".into(), "stores").ok(), Some("c1".into()));
        // The same cursor in another list is another page.
        assert!(seen.fresh("c1".into(), "account users").is_ok());
        match seen.fresh("c1".into(), "stores") {
            Err(Halt::Failed(AccountApiError::Unexpected(m))) => assert_eq!(
                m,
                "the Account API gave the same page cursor twice while listing stores; \
                 the read stops so it does not spend the hour's budget going round"
            ),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
}
