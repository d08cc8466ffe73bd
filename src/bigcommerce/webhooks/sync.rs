//! `storegate webhooks sync`: make each account's hooks on BigCommerce what the configuration
//! wants. Idempotent: creates the missing hooks, re-enables the ones BigCommerce deactivated
//! (and corrects a changed secret), deletes hooks pointing at our receiver that are no longer
//! wanted. Hooks pointing anywhere else belong to other apps and are never touched.
//!
//! The plan ([`plan`]) is a pure function of the hooks found and the hooks wanted; [`HooksClient`]
//! is the thin `/v3/hooks` adapter (scope `store_v2_information`'s sibling: the API account needs
//! "Information & settings" or the webhook scopes of the resources, see docs/bigcommerce.md).

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{SECRET_HEADER, wanted_scopes};
use crate::bigcommerce::api::{AccountError, ApiError, Customer, SUBJECT_ATTRIBUTE};
use crate::config::{BigCommerceAccount, Config};
use crate::secret::Secret;

/// A hook as `/v3/hooks` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Hook {
    pub id: u64,
    pub scope: String,
    pub destination: String,
    pub is_active: bool,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
}

/// One step of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Create {
        scope: String,
    },
    /// Re-enable (BigCommerce deactivated it) and/or put the current secret back.
    Repair {
        id: u64,
        scope: String,
        reactivate: bool,
    },
    Delete {
        id: u64,
        scope: String,
    },
    Keep {
        id: u64,
        scope: String,
    },
}

/// The steps that make `existing` match `wanted` for our `destination`. Only hooks whose
/// destination is ours are considered; a second hook of the same scope is a duplicate to delete.
pub fn plan(existing: &[Hook], destination: &str, secret: &str, wanted: &[&str]) -> Vec<Step> {
    let ours: Vec<&Hook> = existing
        .iter()
        .filter(|h| h.destination == destination)
        .collect();
    let mut steps = Vec::new();
    for scope in wanted {
        let mut same = ours.iter().filter(|h| h.scope == *scope);
        match same.next() {
            None => steps.push(Step::Create {
                scope: (*scope).to_owned(),
            }),
            Some(h) => {
                let secret_ok = h.headers.as_ref().and_then(|m| {
                    m.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(SECRET_HEADER))
                        .map(|(_, v)| v.as_str())
                }) == Some(secret);
                if h.is_active && secret_ok {
                    steps.push(Step::Keep {
                        id: h.id,
                        scope: h.scope.clone(),
                    });
                } else {
                    steps.push(Step::Repair {
                        id: h.id,
                        scope: h.scope.clone(),
                        reactivate: !h.is_active,
                    });
                }
            }
        }
        for dup in same {
            steps.push(Step::Delete {
                id: dup.id,
                scope: dup.scope.clone(),
            });
        }
    }
    for h in &ours {
        if !wanted.contains(&h.scope.as_str()) {
            steps.push(Step::Delete {
                id: h.id,
                scope: h.scope.clone(),
            });
        }
    }
    steps
}

/// The receiver URL of an account: `{public_url}/webhooks/bigcommerce/{id}`.
pub fn destination(cfg: &Config, account: &BigCommerceAccount) -> String {
    format!(
        "{}/webhooks/bigcommerce/{}",
        cfg.public_url.as_str().trim_end_matches('/'),
        account.id
    )
}

/// The `/v3/hooks` calls, and the one customer read the receiver needs.
pub struct HooksClient {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

impl HooksClient {
    pub fn new(account: &BigCommerceAccount) -> Result<Self, AccountError> {
        let http = crate::bigcommerce::store_api_client(account)
            .map_err(|e| AccountError::store(&account.id, ApiError::client_setup(e)))?;
        Ok(HooksClient {
            http,
            base: crate::bigcommerce::store_api_base(account),
            token: account.access_token.clone(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .query(query)
            .header("X-Auth-Token", self.token.expose())
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} {path}: BigCommerce unreachable: {e}"))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if !status.is_success() {
            let title = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("title").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            let hint = if status.as_u16() == 403 {
                " (the API account lacks a scope webhooks need: see docs/bigcommerce.md, \"API account scopes\")"
            } else {
                ""
            };
            return Err(format!(
                "{method} {path}: BigCommerce answered {status}: {title}{hint}"
            ));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("{method} {path}: not JSON: {e}"))
    }

    pub async fn list(&self) -> Result<Vec<Hook>, String> {
        let v = self.call(Method::GET, "/v3/hooks", &[], None).await?;
        serde_json::from_value(v.get("data").cloned().unwrap_or(json!([])))
            .map_err(|e| format!("GET /v3/hooks: unexpected answer: {e}"))
    }

    pub async fn create(
        &self,
        scope: &str,
        destination: &str,
        secret: &Secret,
    ) -> Result<(), String> {
        let body = json!({
            "scope": scope,
            "destination": destination,
            "is_active": true,
            "headers": { SECRET_HEADER: secret.expose() },
        });
        self.call(Method::POST, "/v3/hooks", &[], Some(body))
            .await
            .map(|_| ())
    }

    pub async fn repair(&self, id: u64, secret: &Secret) -> Result<(), String> {
        let body = json!({ "is_active": true, "headers": { SECRET_HEADER: secret.expose() } });
        self.call(Method::PUT, &format!("/v3/hooks/{id}"), &[], Some(body))
            .await
            .map(|_| ())
    }

    pub async fn delete(&self, id: u64) -> Result<(), String> {
        self.call(Method::DELETE, &format!("/v3/hooks/{id}"), &[], None)
            .await
            .map(|_| ())
    }

    /// The customer and its bound subject (the `storegate_subject` attribute), if it exists.
    pub async fn customer(&self, id: u64) -> Result<Option<(Customer, Option<String>)>, String> {
        let q = [
            ("id:in", id.to_string()),
            ("include", "attributes".to_owned()),
        ];
        let v = self.call(Method::GET, "/v3/customers", &q, None).await?;
        let list: Vec<Customer> =
            serde_json::from_value(v.get("data").cloned().unwrap_or(json!([])))
                .map_err(|e| format!("GET /v3/customers: unexpected answer: {e}"))?;
        let Some(c) = list.into_iter().find(|c| c.id == id) else {
            return Ok(None);
        };
        let attrs = self
            .call(
                Method::GET,
                "/v3/customers/attributes",
                &[("name", SUBJECT_ATTRIBUTE.to_owned())],
                None,
            )
            .await?;
        let attr_id = attrs
            .get("data")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|x| x.get("name").and_then(Value::as_str) == Some(SUBJECT_ATTRIBUTE))
            })
            .and_then(|x| x.get("id").and_then(Value::as_u64));
        let subject = attr_id.and_then(|aid| {
            c.attributes
                .iter()
                .find(|a| a.attribute_id == aid)
                .map(|a| a.attribute_value.clone())
        });
        Ok(Some((c, subject)))
    }
}

/// What one account's sync did.
#[derive(Debug)]
pub struct AccountReport {
    pub account: String,
    pub destination: String,
    pub steps: Vec<Step>,
    pub error: Option<String>,
}

/// Syncs every account that has a `webhook_secret`.
pub async fn run(cfg: &Config) -> Vec<AccountReport> {
    let mut out = Vec::new();
    for account in &cfg.bigcommerce {
        let Some(secret) = &account.webhook_secret else {
            continue;
        };
        let dest = destination(cfg, account);
        let mut report = AccountReport {
            account: account.id.clone(),
            destination: dest.clone(),
            steps: Vec::new(),
            error: None,
        };
        let result = async {
            let client = HooksClient::new(account).map_err(|e| e.to_string())?;
            let existing = client.list().await?;
            let steps = plan(
                &existing,
                &dest,
                secret.expose(),
                &wanted_scopes(account.b2b.is_some()),
            );
            for step in &steps {
                match step {
                    Step::Create { scope } => client.create(scope, &dest, secret).await?,
                    Step::Repair { id, .. } => client.repair(*id, secret).await?,
                    Step::Delete { id, .. } => client.delete(*id).await?,
                    Step::Keep { .. } => {}
                }
                report.steps.push(step.clone());
            }
            Ok::<_, String>(())
        }
        .await;
        report.error = result.err();
        out.push(report);
    }
    out
}

/// The text `storegate webhooks sync` prints.
pub fn render(reports: &[AccountReport]) -> String {
    let mut s = String::new();
    if reports.is_empty() {
        s.push_str("no [[bigcommerce]] account has a webhook_secret: nothing to sync\n");
    }
    for r in reports {
        s.push_str(&format!(
            "[[bigcommerce]] {} -> {}\n",
            r.account, r.destination
        ));
        for step in &r.steps {
            let line = match step {
                Step::Create { scope } => format!("  created   {scope}"),
                Step::Repair {
                    id,
                    scope,
                    reactivate: true,
                } => format!("  re-enabled {scope} (hook {id}, deactivated by BigCommerce)"),
                Step::Repair { id, scope, .. } => {
                    format!("  updated   {scope} (hook {id}: secret header)")
                }
                Step::Delete { id, scope } => {
                    format!("  deleted   {scope} (hook {id}, no longer wanted)")
                }
                Step::Keep { id, scope } => format!("  ok        {scope} (hook {id})"),
            };
            s.push_str(&line);
            s.push('\n');
        }
        if let Some(e) = &r.error {
            s.push_str(&format!("  FAILED: {e}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEST: &str = "https://sso.example.com/webhooks/bigcommerce/main";

    fn hook(id: u64, scope: &str, dest: &str, active: bool, secret: &str) -> Hook {
        Hook {
            id,
            scope: scope.into(),
            destination: dest.into(),
            is_active: active,
            headers: Some(BTreeMap::from([(
                SECRET_HEADER.to_owned(),
                secret.to_owned(),
            )])),
        }
    }

    #[test]
    fn sync_creates_missing_reenables_inactive_deletes_unwanted_and_leaves_other_apps_alone() {
        let existing = vec![
            hook(1, "store/customer/*", DEST, false, "s"),
            hook(2, "store/company/user/*", DEST, true, "s"),
            hook(3, "store/customer/*", "https://other.app/hook", true, "x"),
            hook(4, "store/customer/*", DEST, true, "s"),
        ];
        let steps = plan(&existing, DEST, "s", &["store/customer/*"]);
        assert_eq!(
            steps,
            vec![
                Step::Repair {
                    id: 1,
                    scope: "store/customer/*".into(),
                    reactivate: true
                },
                Step::Delete {
                    id: 4,
                    scope: "store/customer/*".into()
                },
                Step::Delete {
                    id: 2,
                    scope: "store/company/user/*".into()
                },
            ]
        );
        let steps = plan(
            &[],
            DEST,
            "s",
            &["store/customer/*", "store/company/user/*"],
        );
        assert_eq!(steps.len(), 2);
        assert!(steps.iter().all(|s| matches!(s, Step::Create { .. })));
    }

    #[test]
    fn a_hook_with_an_old_secret_is_updated_and_a_good_one_kept() {
        let steps = plan(
            &[hook(1, "store/customer/*", DEST, true, "old")],
            DEST,
            "new",
            &["store/customer/*"],
        );
        assert_eq!(
            steps,
            vec![Step::Repair {
                id: 1,
                scope: "store/customer/*".into(),
                reactivate: false
            }]
        );
        let steps = plan(
            &[hook(1, "store/customer/*", DEST, true, "new")],
            DEST,
            "new",
            &["store/customer/*"],
        );
        assert_eq!(
            steps,
            vec![Step::Keep {
                id: 1,
                scope: "store/customer/*".into()
            }]
        );
    }
}
