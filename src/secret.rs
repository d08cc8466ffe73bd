//! Secrets that refuse to print.
//!
//! Client secrets, API tokens, session ids and minted login tokens are wrapped so that a careless
//! `{:?}` or `{}` in a log line shows only "redacted". The one accessor, [`Secret::expose`], is the
//! deliberate, greppable place where a secret leaves the wrapper.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Every call site is a place where a secret leaves the wrapper: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redacted")
    }
}

/// Whether two secrets are equal, in a time that says nothing about them: both sides are hashed
/// to SHA-256 first (so neither the length nor the position of the first difference shows), then
/// the digests are compared without an early exit. The one comparison for tokens, passwords,
/// CSRF values and shared secrets.
pub fn ct_eq(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a.as_ref()), Sha256::digest(b.as_ref()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// A random URL-safe token of 256 bits (CSRF values, opaque keys in binding cookies).
pub fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_is_equality() {
        assert!(ct_eq("token", "token"));
        assert!(ct_eq("", ""));
        assert!(!ct_eq("token", "tokem"));
        assert!(!ct_eq("token", "token "));
        assert!(!ct_eq("", "x"));
        assert!(ct_eq(b"bytes".as_slice(), "bytes"));
    }

    #[test]
    fn secret_never_formats_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(redacted)");
        assert_eq!(format!("{s}"), "redacted");
        assert_eq!(s.expose(), "hunter2");
    }
}
