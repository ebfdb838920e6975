//! See `bowline_fuzz::xds_state` (fuzz/src/xds_state.rs) for what the input is and what runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bowline_fuzz::xds_state::run(data));
