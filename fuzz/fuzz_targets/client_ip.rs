#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::fuzzing::Target;

fuzz_target!(|data: &[u8]| storegate_fuzz::run(Target::ClientIp, data));
