//! Validation of `[[account]]` (control-panel users, issue 12): the UUID, the token, and stores
//! that are configured `[[bigcommerce]]` ids, each in one account only.

use std::collections::HashMap;

use url::Url;

use super::super::account::{AccountStore, ControlPanelAccount};
use super::super::diag::{Seg, key};
use super::super::file::FileConfig;
use super::Checker;

pub(super) fn accounts(c: &mut Checker<'_>, f: &FileConfig) -> Vec<ControlPanelAccount> {
    c.duplicate_ids("account", f.accounts.iter().map(|a| a.id.as_str()));
    let mut owner: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::new();
    for (i, a) in f.accounts.iter().enumerate() {
        let t = [key("account"), Seg::Index(i)];
        let at = |k: &str| [key("account"), Seg::Index(i), key(k)];
        let uuid_ok = uuid::Uuid::parse_str(&a.account_uuid).is_ok()
            && a.account_uuid.len() == 36
            && a.account_uuid
                .chars()
                .all(|ch| ch == '-' || ch.is_ascii_hexdigit());
        if !uuid_ok {
            c.error(
                &at("account_uuid"),
                format!(
                    "`account_uuid` \"{}\" is not a UUID like 0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b (the account's id, not a store hash)",
                    a.account_uuid
                ),
            );
        }
        let token = c.secret(
            &t,
            "access_token",
            &a.access_token,
            Some(&a.access_token_file),
            true,
        );
        let api_base = match &a.api_base {
            Some(raw) => c
                .interpolate(&at("api_base"), raw)
                .and_then(|raw| c.url(&at("api_base"), &raw)),
            None => Url::parse("https://api.bigcommerce.com").ok(),
        };
        if a.stores.is_empty() {
            c.error(
                &at("stores"),
                format!(
                    "[[account]] \"{}\" needs `stores`: the [[bigcommerce]] ids of its store hashes",
                    a.id
                ),
            );
        }
        let mut stores = Vec::new();
        let mut listed = std::collections::HashSet::new();
        for (j, s) in a.stores.iter().enumerate() {
            let path = [key("account"), Seg::Index(i), key("stores"), Seg::Index(j)];
            // Named twice in one account: said as such, not as "in acme and in acme".
            if !listed.insert(s.as_str()) {
                c.error(
                    &path,
                    format!("[[account]] \"{}\" lists store \"{s}\" twice", a.id),
                );
                continue;
            }
            let Some(b) = f.bigcommerce.iter().find(|b| &b.id == s) else {
                c.error(
                    &path,
                    format!("[[account]] \"{}\" names store \"{s}\", which is not a configured [[bigcommerce]] id", a.id),
                );
                continue;
            };
            if let Some(other) = owner.insert(s.as_str(), a.id.as_str()) {
                c.error(
                    &path,
                    format!(
                        "store \"{s}\" is in [[account]] \"{other}\" and in \"{}\": a store hash belongs to one account",
                        a.id
                    ),
                );
                continue;
            }
            stores.push(AccountStore {
                id: b.id.clone(),
                store_hash: b.store_hash.clone(),
            });
        }
        if let (true, Some(access_token), Some(api_base)) = (uuid_ok, token, api_base) {
            out.push(ControlPanelAccount {
                id: a.id.clone(),
                account_uuid: a.account_uuid.to_lowercase(),
                access_token,
                api_base,
                stores,
                keep_account_on_leave: a.keep_account_on_leave,
                manage_all: a.manage_all,
            });
        }
    }
    out
}
