//! Fuzz target: `weir::fuzzing::bucket_cookie` must never panic on any input.
//! Run (stable toolchain): `cargo fuzz run bucket_cookie --sanitizer none`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::bucket_cookie(data));
