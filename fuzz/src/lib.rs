//! What the five libFuzzer targets share: the entry points of `storegate::fuzzing`, built once
//! per process with the test-only keys of tests/fuzz/keys (compiled in, so a target needs no
//! working directory).

use std::sync::OnceLock;

use storegate::fuzzing::{Fuzz, FuzzKeys, Target};

fn fuzz() -> &'static Fuzz {
    static FUZZ: OnceLock<Fuzz> = OnceLock::new();
    FUZZ.get_or_init(|| {
        let keys = FuzzKeys {
            idp_key_pem: include_str!("../../tests/fuzz/keys/idp.key").into(),
            idp_cert_pem: include_str!("../../tests/fuzz/keys/idp.crt").into(),
            idp_metadata_xml: include_str!("../../tests/fuzz/keys/idp-metadata.xml").into(),
            sp_key_pem: include_str!("../../tests/fuzz/keys/sp.key").into(),
            sp_cert_pem: include_str!("../../tests/fuzz/keys/sp.crt").into(),
        };
        match Fuzz::new(&keys) {
            Ok(f) => f,
            Err(e) => panic!("cannot build the fuzz targets: {e}"),
        }
    })
}

/// Runs one libFuzzer input through `target` (a panic is the finding).
pub fn run(target: Target, data: &[u8]) {
    let _ = fuzz().run(target, data);
}
