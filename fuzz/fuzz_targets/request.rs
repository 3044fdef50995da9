//! Fuzz target: `weir::fuzzing::request` must never panic on any input.
//! Run (stable toolchain): `cargo fuzz run request --sanitizer none`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::request(data));
