//! Durations from flags and the environment (`PING_INTERVAL=500ms`, `30s`, `2m`, `30`):
//! arbitrary text is a duration or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsfleet::config::parse_duration;

fuzz_target!(|text: &str| {
    if let Ok(duration) = parse_duration(text) {
        // Whatever was accepted is finite and printable.
        let _ = format!("{duration:?}");
    }
});
