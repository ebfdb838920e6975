//! See `bowline_fuzz::config_yaml` (fuzz/src/config_yaml.rs) for what the input is and what runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bowline_fuzz::config_yaml::run(data));
