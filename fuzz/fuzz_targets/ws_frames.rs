//! Fuzz target: `weir::fuzzing::ws_frames` must never panic on any input.
//! Run (stable toolchain): `cargo fuzz run ws_frames --sanitizer none`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::ws_frames(data));
