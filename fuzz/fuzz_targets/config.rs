//! Fuzz target: `weir::fuzzing::config` must never panic on any input.
//! Run (stable toolchain): `cargo fuzz run config --sanitizer none`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::config(data));
