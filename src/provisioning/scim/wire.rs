//! SCIM 2.0 wire shapes (RFC 7643, RFC 7644): schema URNs, the discovery documents, list and error
//! bodies. Resources themselves travel as JSON objects (`serde_json::Value`) so that attributes a
//! client sends and this gateway does not interpret (the enterprise extension, `name.formatted`,
//! ...) round-trip unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const SEARCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// The media type of every SCIM answer (RFC 7644 §8.1).
pub const CONTENT_TYPE: &str = "application/scim+json";

/// Largest page served; Identity Governance collectors ask for up to 999 (OPENTEXT.md).
pub const MAX_PAGE: usize = 1000;

/// `scimType` values of RFC 7644 §3.12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ScimType {
    InvalidFilter,
    TooMany,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
    InvalidVers,
    Sensitive,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub schemas: [&'static str; 1],
    /// The HTTP status as a string (RFC 7644 §3.12).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scim_type: Option<ScimType>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse {
    pub schemas: [&'static str; 1],
    pub total_results: usize,
    pub start_index: usize,
    pub items_per_page: usize,
    #[serde(rename = "Resources")]
    pub resources: Vec<Value>,
}

impl ListResponse {
    pub fn new(total: usize, start_index: usize, resources: Vec<Value>) -> Self {
        ListResponse {
            schemas: [LIST_SCHEMA],
            total_results: total,
            start_index,
            items_per_page: resources.len(),
            resources,
        }
    }
}

/// One PATCH operation (RFC 7644 §3.5.2). `op` is compared case-insensitively: Azure and some
/// Identity Manager policies send "Replace".
#[derive(Debug, Clone, Deserialize)]
pub struct PatchOperation {
    pub op: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PatchRequest {
    #[serde(default)]
    pub schemas: Vec<String>,
    #[serde(rename = "Operations", alias = "operations")]
    pub operations: Vec<PatchOperation>,
}

/// Query parameters of a list or `.search` request (RFC 7644 §3.4.2, §3.4.3).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default)]
    pub start_index: Option<i64>,
    #[serde(default)]
    pub count: Option<i64>,
    #[serde(default)]
    pub attributes: Option<String>,
    #[serde(default)]
    pub excluded_attributes: Option<String>,
    #[serde(default)]
    pub sort_by: Option<String>,
    #[serde(default)]
    pub sort_order: Option<String>,
}

/// A `.search` body: like the query, with attribute lists as arrays.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchRequest {
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default)]
    pub start_index: Option<i64>,
    #[serde(default)]
    pub count: Option<i64>,
    #[serde(default)]
    pub attributes: Option<Vec<String>>,
    #[serde(default)]
    pub excluded_attributes: Option<Vec<String>>,
    #[serde(default)]
    pub sort_by: Option<String>,
    #[serde(default)]
    pub sort_order: Option<String>,
}

impl From<SearchRequest> for ListQuery {
    fn from(s: SearchRequest) -> Self {
        ListQuery {
            filter: s.filter,
            start_index: s.start_index,
            count: s.count,
            attributes: s.attributes.map(|a| a.join(",")),
            excluded_attributes: s.excluded_attributes.map(|a| a.join(",")),
            sort_by: s.sort_by,
            sort_order: s.sort_order,
        }
    }
}

pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://github.com/storegate/storegate#scim",
        "patch": { "supported": true },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": true, "maxResults": MAX_PAGE },
        "changePassword": { "supported": false },
        "sort": { "supported": false },
        "etag": { "supported": true },
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "A static bearer token configured as [scim] bearer_token",
                "primary": true
            },
            {
                "type": "httpbasic",
                "name": "HTTP Basic",
                "description": "Configured as [scim] basic_user / basic_password"
            }
        ],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig")
        }
    })
}

pub fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "A person who may get BigCommerce customer accounts",
            "schema": USER_SCHEMA,
            "schemaExtensions": [{ "schema": ENTERPRISE_SCHEMA, "required": false }],
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User") }
        }),
        json!({
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "A group; policy rules match on its displayName",
            "schema": GROUP_SCHEMA,
            "schemaExtensions": [],
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group") }
        }),
    ]
}

fn attr(
    name: &str,
    ty: &str,
    multi: bool,
    required: bool,
    mutability: &str,
    uniqueness: &str,
) -> Value {
    json!({
        "name": name,
        "type": ty,
        "multiValued": multi,
        "description": name,
        "required": required,
        "caseExact": false,
        "mutability": mutability,
        "returned": "default",
        "uniqueness": uniqueness,
    })
}

fn complex(name: &str, multi: bool, mutability: &str, subs: Vec<Value>) -> Value {
    let mut v = attr(name, "complex", multi, false, mutability, "none");
    v["subAttributes"] = Value::Array(subs);
    v
}

fn reference(name: &str, types: &[&str], mutability: &str) -> Value {
    let mut v = attr(name, "reference", false, false, mutability, "none");
    v["referenceTypes"] = json!(types);
    v
}

/// The attributes this service declares. scim2-tester and Identity Governance read these to know
/// what to send; anything else a client sends is still kept.
pub fn schemas(base: &str) -> Vec<Value> {
    let rw = "readWrite";
    let ro = "readOnly";
    let user = json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": USER_SCHEMA,
        "name": "User",
        "description": "User Account",
        "attributes": [
            attr("userName", "string", false, true, rw, "server"),
            complex("name", false, rw, vec![
                attr("formatted", "string", false, false, rw, "none"),
                attr("familyName", "string", false, false, rw, "none"),
                attr("givenName", "string", false, false, rw, "none"),
            ]),
            attr("displayName", "string", false, false, rw, "none"),
            attr("title", "string", false, false, rw, "none"),
            attr("active", "boolean", false, false, rw, "none"),
            complex("emails", true, rw, vec![
                attr("value", "string", false, false, rw, "none"),
                attr("type", "string", false, false, rw, "none"),
                attr("primary", "boolean", false, false, rw, "none"),
            ]),
            complex("groups", true, ro, vec![
                attr("value", "string", false, false, ro, "none"),
                reference("$ref", &["User", "Group"], ro),
                attr("display", "string", false, false, ro, "none"),
            ]),
        ],
        "meta": { "resourceType": "Schema", "location": format!("{base}/Schemas/{USER_SCHEMA}") }
    });
    let enterprise = json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": ENTERPRISE_SCHEMA,
        "name": "EnterpriseUser",
        "description": "Enterprise User",
        "attributes": [
            attr("employeeNumber", "string", false, false, rw, "none"),
            attr("costCenter", "string", false, false, rw, "none"),
            attr("organization", "string", false, false, rw, "none"),
            attr("division", "string", false, false, rw, "none"),
            attr("department", "string", false, false, rw, "none"),
        ],
        "meta": { "resourceType": "Schema", "location": format!("{base}/Schemas/{ENTERPRISE_SCHEMA}") }
    });
    let group = json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": GROUP_SCHEMA,
        "name": "Group",
        "description": "Group",
        "attributes": [
            attr("displayName", "string", false, true, rw, "none"),
            complex("members", true, rw, vec![
                attr("value", "string", false, false, "immutable", "none"),
                reference("$ref", &["User", "Group"], "immutable"),
                attr("display", "string", false, false, "immutable", "none"),
                attr("type", "string", false, false, "immutable", "none"),
            ]),
        ],
        "meta": { "resourceType": "Schema", "location": format!("{base}/Schemas/{GROUP_SCHEMA}") }
    });
    vec![user, enterprise, group]
}
