//! `[scim]` and `[provisioning]`: the file shape and the validated values (issue 5).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

#[derive(Debug, Default, Deserialize)]
pub struct ScimFile {
    /// Serve SCIM 2.0 under `/scim/v2`. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// Bearer token Identity Manager / Governance send (`Authorization: Bearer ...`); a literal,
    /// better a `${ENV}` reference, or `bearer_token_file`.
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub bearer_token_file: Option<String>,
    /// HTTP Basic user (alternative or addition to the bearer token).
    #[serde(default)]
    pub basic_user: Option<String>,
    #[serde(default)]
    pub basic_password: Option<String>,
    #[serde(default)]
    pub basic_password_file: Option<String>,
    /// `"file:DIR"` (default `file:scim-data`, relative to the working directory), `"memory"`, or
    /// `"redis"` (shared by replicas through `[session] redis_url`).
    #[serde(default)]
    pub store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ProvisioningFile {
    /// How a leaver (deleted, or `active: false`) is deprovisioned: `"restrict"` (default: locked
    /// customer group, channels cut to the origin channel, random password) or `"delete"`.
    #[serde(default)]
    pub deprovision: Option<String>,
    /// Customer group leavers are moved to (created if missing). Default `"Locked"`.
    #[serde(default)]
    pub locked_customer_group: Option<String>,
    /// How often `serve` runs a reconcile pass. Default 15m; "0s" turns the schedule off.
    #[serde(default)]
    pub reconcile_interval: Option<String>,
    /// The durable work queue: `"file:PATH"` (one gateway) or `"redis"` (a Redis Stream with a
    /// consumer group on the `[session]` Redis, shared by every replica).
    /// Default `file:provisioning-queue.json`.
    #[serde(default)]
    pub queue: Option<String>,
    /// Redis queue: how long work a replica took stays with it before another replica takes it
    /// over (the replica crashed or stopped). Default 5m; at least 1s. Keep it well above the
    /// BigCommerce `timeout`.
    #[serde(default)]
    pub queue_claim_after: Option<String>,
    /// The IdP whose subjects SCIM users carry. Default: the first `[[idp]]`.
    #[serde(default)]
    pub idp: Option<String>,
    /// Which SCIM attribute holds that IdP's subject: `"externalId"` (default; `userName` when a
    /// user has none) or `"userName"`.
    #[serde(default)]
    pub subject_attribute: Option<String>,
    /// Customers carrying the `storegate_subject` attribute that are not in the desired state (no
    /// longer granted, unknown to SCIM) are reported each pass; with `true` they are also
    /// deprovisioned. Default false (report only).
    #[serde(default)]
    pub repair_drift: Option<bool>,
}

#[derive(Debug, Clone)]
pub enum ScimStorage {
    File(PathBuf),
    Memory,
    /// The gateway's Redis (`[session] redis_url`), shared by every replica.
    Redis,
}

#[derive(Debug, Clone)]
pub struct ScimConfig {
    pub bearer_token: Option<Secret>,
    pub basic: Option<(String, Secret)>,
    pub store: ScimStorage,
}

/// Where the provisioning queue lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueStorage {
    File(PathBuf),
    /// A Redis Stream on the `[session]` Redis.
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deprovision {
    Restrict,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectAttribute {
    ExternalId,
    UserName,
}

#[derive(Debug, Clone)]
pub struct ProvisioningConfig {
    pub deprovision: Deprovision,
    pub locked_customer_group: String,
    pub reconcile_interval: Option<Duration>,
    pub queue: QueueStorage,
    pub queue_claim_after: Duration,
    pub idp: Option<String>,
    pub subject_attribute: SubjectAttribute,
    pub repair_drift: bool,
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        ProvisioningConfig {
            deprovision: Deprovision::Restrict,
            locked_customer_group: "Locked".into(),
            reconcile_interval: Some(Duration::from_secs(15 * 60)),
            queue: QueueStorage::File(PathBuf::from("provisioning-queue.json")),
            queue_claim_after: Duration::from_secs(5 * 60),
            idp: None,
            subject_attribute: SubjectAttribute::ExternalId,
            repair_drift: false,
        }
    }
}
