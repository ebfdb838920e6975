//! See `bowline_fuzz::zds` (fuzz/src/zds.rs) for what the input is and what runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bowline_fuzz::zds::run(data));
