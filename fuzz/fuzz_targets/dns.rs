//! See `bowline_fuzz::dns` (fuzz/src/dns.rs) for what the input is and what runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bowline_fuzz::dns::run(data));
