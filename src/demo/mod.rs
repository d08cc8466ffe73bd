//! `storegate demo`: everything needed to run the gateway with no configuration. Nothing in here is
//! for production use.

pub mod op;
