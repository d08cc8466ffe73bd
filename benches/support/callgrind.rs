//! Valgrind client requests (valgrind.h's amd64 magic sequence; callgrind.h's request codes),
//! for the instruction counts of examples/saml_acs_cost.rs and benches/launch.rs: they zero
//! callgrind's counters before the measured loop and dump them after it. Outside valgrind the
//! sequence does nothing. Included by `#[path]` (benches and examples share no crate).

const BASE: u64 = ((b'C' as u64) << 24) | ((b'T' as u64) << 16);
pub const DUMP_STATS: u64 = BASE;
pub const ZERO_STATS: u64 = BASE + 1;
pub const START_INSTRUMENTATION: u64 = BASE + 4;
pub const STOP_INSTRUMENTATION: u64 = BASE + 5;

#[cfg(target_arch = "x86_64")]
pub fn request(code: u64) {
    let args: [u64; 6] = [code, 0, 0, 0, 0, 0];
    let mut result: u64 = 0;
    // SAFETY: the rotations sum to 128 (rdi unchanged) and xchg rbx,rbx is a no-op; under
    // valgrind the sequence is the client-request trap that reads `args`.
    unsafe {
        std::arch::asm!(
            "rol rdi, 3", "rol rdi, 13", "rol rdi, 61", "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") result,
            in("rax") args.as_ptr(),
            options(nostack)
        );
    }
    let _ = result;
}
#[cfg(not(target_arch = "x86_64"))]
pub fn request(_code: u64) {}
