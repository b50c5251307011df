//! Fuzz target for the replication frame and message decoders (what a network peer controls).
//! Run: `cd agent/fuzz && cargo +nightly fuzz run frame_decoder -- -max_total_time=300`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mt_agent::replication::net::check_decoders(data);
});
