//! Fuzz target: `weir::fuzzing::routing` must never panic on any input.
//! Run (stable toolchain): `cargo fuzz run routing --sanitizer none`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::routing(data));
