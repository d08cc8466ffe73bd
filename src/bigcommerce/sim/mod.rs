//! The BigCommerce simulator (placeholder while being written).
