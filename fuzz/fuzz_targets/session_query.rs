//! The socket route's query string, decoded as axum's `Query<Vec<(String, String)>>` decodes
//! it, and every value checked as a session id: never a panic, and an id is accepted exactly
//! when it is 1 to 64 characters of `[A-Za-z0-9_-]` (empty means "make a new one").
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsfleet::protocol::{validate_session_id, MAX_SESSION_ID_LEN};

fuzz_target!(|query: &str| {
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else {
        return;
    };
    for (_, value) in &pairs {
        let accepted = validate_session_id(value).is_ok();
        let well_formed = value.len() <= MAX_SESSION_ID_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        assert_eq!(accepted, well_formed, "session id {value:?}");
    }
});
