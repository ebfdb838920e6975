//! See `bowline_fuzz::hbone_connect` (fuzz/src/hbone_connect.rs) for what the input is and what runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bowline_fuzz::hbone_connect::run(data));
