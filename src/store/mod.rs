//! The shared stores' plumbing: the one Redis client of the gateway, used by the session store,
//! the one-time ids, the SCIM store and the provisioning queue alike.

pub mod redis;
mod redis_sentinel;

pub use self::redis::{RedisConn, RedisHandle, describe};

/// The start of every key the gateway keeps in Redis (sessions, one-time ids, SCIM data, the
/// provisioning queue).
pub const REDIS_PREFIX: &str = "storegate:";
