//! The item reader's hand-written scan against serde_json, on any bytes: every input the scan
//! reads must be read the same by serde_json, and every header it gives must be serde_json's.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    flagstore::testing::check_item_json(data);
});
