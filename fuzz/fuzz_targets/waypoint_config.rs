//! See `bowline_fuzz::waypoint_config` (fuzz/src/waypoint_config.rs) for what the input is
//! and what runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bowline_fuzz::waypoint_config::run(data));
