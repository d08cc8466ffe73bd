//! Forward authentication and the built-in proxy (issue 14), the parts without HTTP handlers:
//! reading what a front door forwards ([`request`]), the return URL after sign-in
//! ([`return_url`]), the ES256 keys and their JWKS ([`keys`]) and the identity token an upstream
//! receives ([`token`]). The decision itself is `policy::route`; the handlers are
//! `web::forward` and `web::proxy`, the journey `flows::forward_auth`. See docs/reverse-proxy.md.

pub mod keys;
pub mod request;
pub mod return_url;
pub mod token;
