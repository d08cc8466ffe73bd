//! The ES256 keys that sign identity tokens, and their JWKS (`GET /.well-known/jwks.json`).
//!
//! Rotation: the current key (`[forward_auth] signing_key_file`, or one generated at start for a
//! single process) signs; earlier keys listed in `previous_key_files` are only published, so a
//! token signed just before the switch verifies until it expires. Each key's `kid` is its RFC 7638
//! JWK thumbprint, so every replica names the same key the same way.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcKeyRef};
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// One public key in JWK form (RFC 7517, EC P-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicJwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub x: String,
    pub y: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: &'static str,
    pub alg: &'static str,
}

/// The signing key. Its Debug shows only the kid.
pub struct SigningKey {
    encoding: EncodingKey,
    public: PublicJwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(kid {})", self.public.kid)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: not a PEM EC key")]
    NotEcPem(String),
    #[error("{0}: the key is not on P-256 (ES256 needs prime256v1)")]
    WrongCurve(String),
    #[error("{0}: {1}")]
    Crypto(String, String),
}

fn jwk_of<T: HasPublic>(what: &str, ec: &EcKeyRef<T>) -> Result<PublicJwk, KeyError> {
    let crypto = |e: openssl::error::ErrorStack| KeyError::Crypto(what.to_owned(), e.to_string());
    if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
        return Err(KeyError::WrongCurve(what.to_owned()));
    }
    let mut ctx = BigNumContext::new().map_err(crypto)?;
    let mut x = BigNum::new().map_err(crypto)?;
    let mut y = BigNum::new().map_err(crypto)?;
    ec.public_key()
        .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
        .map_err(crypto)?;
    let x = URL_SAFE_NO_PAD.encode(x.to_vec_padded(32).map_err(crypto)?);
    let y = URL_SAFE_NO_PAD.encode(y.to_vec_padded(32).map_err(crypto)?);
    // RFC 7638 §3.2: the required members, lexicographic order, no white space.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    Ok(PublicJwk {
        kty: "EC",
        crv: "P-256",
        x,
        y,
        kid,
        use_: "sig",
        alg: "ES256",
    })
}

impl SigningKey {
    /// A fresh P-256 key (a gateway without `signing_key_file`).
    pub fn generate() -> Result<Self, KeyError> {
        let what = "generated key";
        let crypto =
            |e: openssl::error::ErrorStack| KeyError::Crypto(what.to_owned(), e.to_string());
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(crypto)?;
        let ec = EcKey::generate(&group).map_err(crypto)?;
        Self::from_ec(what, ec)
    }

    /// A PEM private key (PKCS#8 or SEC1 "EC PRIVATE KEY"); `what` names it in errors.
    pub fn from_pem(what: &str, pem: &[u8]) -> Result<Self, KeyError> {
        let pkey =
            PKey::private_key_from_pem(pem).map_err(|_| KeyError::NotEcPem(what.to_owned()))?;
        let ec = pkey
            .ec_key()
            .map_err(|_| KeyError::NotEcPem(what.to_owned()))?;
        Self::from_ec(what, ec)
    }

    fn from_ec(what: &str, ec: EcKey<openssl::pkey::Private>) -> Result<Self, KeyError> {
        let crypto =
            |e: openssl::error::ErrorStack| KeyError::Crypto(what.to_owned(), e.to_string());
        let public = jwk_of(what, &ec)?;
        let pkcs8 = PKey::from_ec_key(ec)
            .and_then(|k| k.private_key_to_pem_pkcs8())
            .map_err(crypto)?;
        let encoding = EncodingKey::from_ec_pem(&pkcs8)
            .map_err(|e| KeyError::Crypto(what.to_owned(), e.to_string()))?;
        Ok(SigningKey { encoding, public })
    }

    pub fn kid(&self) -> &str {
        &self.public.kid
    }
    pub fn public(&self) -> &PublicJwk {
        &self.public
    }
    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// The public half of an earlier key, from a private or public PEM.
pub fn previous_from_pem(what: &str, pem: &[u8]) -> Result<PublicJwk, KeyError> {
    if let Ok(k) = SigningKey::from_pem(what, pem) {
        return Ok(k.public);
    }
    let pkey = PKey::public_key_from_pem(pem).map_err(|_| KeyError::NotEcPem(what.to_owned()))?;
    let ec = pkey
        .ec_key()
        .map_err(|_| KeyError::NotEcPem(what.to_owned()))?;
    jwk_of(what, &ec)
}

/// The current key and the earlier ones still published.
#[derive(Debug)]
pub struct KeySet {
    current: SigningKey,
    previous: Vec<PublicJwk>,
}

#[derive(Serialize)]
pub struct Jwks<'a> {
    pub keys: Vec<&'a PublicJwk>,
}

impl KeySet {
    pub fn new(current: SigningKey, previous: Vec<PublicJwk>) -> Self {
        // A key listed twice, or the current key listed again, is published once.
        let mut seen = vec![current.public.kid.clone()];
        let previous = previous
            .into_iter()
            .filter(|p| {
                let fresh = !seen.contains(&p.kid);
                seen.push(p.kid.clone());
                fresh
            })
            .collect();
        KeySet { current, previous }
    }

    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// The JWKS document: the current key first.
    pub fn jwks(&self) -> Jwks<'_> {
        Jwks {
            keys: std::iter::once(&self.current.public)
                .chain(self.previous.iter())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_key_keeps_its_kid_and_the_public_half_matches() {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = EcKey::generate(&group).unwrap();
        let pem = ec.private_key_to_pem().unwrap();
        let a = SigningKey::from_pem("a", &pem).unwrap();
        let b = SigningKey::from_pem("b", &pem).unwrap();
        assert_eq!(a.kid(), b.kid());
        let public_pem = ec.public_key_to_pem().unwrap();
        assert_eq!(previous_from_pem("p", &public_pem).unwrap(), *a.public());
        assert!(format!("{a:?}").starts_with("SigningKey(kid "));
    }

    #[test]
    fn other_curves_and_rsa_are_refused() {
        let group = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        let pem = EcKey::generate(&group)
            .unwrap()
            .private_key_to_pem()
            .unwrap();
        assert!(matches!(
            SigningKey::from_pem("k", &pem),
            Err(KeyError::WrongCurve(_))
        ));
        let rsa = openssl::rsa::Rsa::generate(2048)
            .unwrap()
            .private_key_to_pem()
            .unwrap();
        assert!(matches!(
            SigningKey::from_pem("k", &rsa),
            Err(KeyError::NotEcPem(_))
        ));
    }

    #[test]
    fn jwks_publishes_current_then_previous_once() {
        let old = SigningKey::generate().unwrap();
        let new = SigningKey::generate().unwrap();
        let set = KeySet::new(new, vec![old.public().clone(), old.public().clone()]);
        let set = KeySet::new(
            SigningKey::generate().unwrap(),
            set.jwks().keys.into_iter().cloned().collect(),
        );
        assert_eq!(set.jwks().keys.len(), 3);
        assert_eq!(set.jwks().keys[0].kid, set.current().kid());
    }
}
