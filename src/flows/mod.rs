//! One file per journey a newcomer asks about, each readable top to bottom.

pub mod provision;
