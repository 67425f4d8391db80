//! A receiver's `Retry-After` header, whatever it sends: delay seconds are
//! read exactly, a date in the past is no wait, and nothing panics.
#![no_main]

use std::time::{Duration, SystemTime};

use herald::retry::schedule::parse_retry_after;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &str| {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let parsed = parse_retry_after(value, now);
    if let Ok(seconds) = value.trim().parse::<u64>() {
        assert_eq!(parsed, Some(Duration::from_secs(seconds)));
    }
});
