//! The identity token an upstream receives: a short-lived ES256 JWT whose audience is the route.
//! It can only be minted from a [`RouteGrant`], the policy's proof for this request.

use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

use super::keys::SigningKey;
use crate::clock::UnixTime;
use crate::identity::Identity;
use crate::policy::route::RouteGrant;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityClaims {
    /// The gateway's public URL.
    pub iss: String,
    /// The route's name: an upstream accepts only tokens minted for it.
    pub aud: String,
    pub sub: String,
    pub iat: UnixTime,
    pub nbf: UnixTime,
    pub exp: UnixTime,
    pub jti: String,
    /// The IdP the person signed in through.
    pub idp: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// Only the groups and roles the route's conditions name.
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acr: Option<String>,
}

impl IdentityClaims {
    pub fn new(issuer: &str, grant: &RouteGrant, id: &Identity, lifetime_secs: i64) -> Self {
        let now = grant.decided_at();
        IdentityClaims {
            iss: issuer.to_owned(),
            aud: grant.route().to_owned(),
            sub: id.subject.clone(),
            iat: now,
            nbf: now,
            exp: now + lifetime_secs,
            jti: uuid::Uuid::new_v4().to_string(),
            idp: id.idp.to_string(),
            email: id.email.clone(),
            name: Some(id.display_name().to_owned()),
            groups: grant.groups().to_vec(),
            roles: grant.roles().to_vec(),
            acr: id.auth.acr.clone(),
        }
    }
}

/// Signs the claims for `grant`.
pub fn mint(
    key: &SigningKey,
    issuer: &str,
    grant: &RouteGrant,
    id: &Identity,
    lifetime_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid().to_owned());
    header.typ = Some("JWT".to_owned());
    let claims = IdentityClaims::new(issuer, grant, id, lifetime_secs);
    jsonwebtoken::encode(&header, &claims, key.encoding())
}
