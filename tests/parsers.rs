//! Property tests (proptest) for everything the project parses itself: session ids, the
//! query of the socket route, durations, and messages from the pub/sub channel. Arbitrary
//! input must give an answer or a clear error, never a panic, and valid input must round-trip.
//!
//! `cargo fuzz` needs a nightly toolchain, which these machines cannot fetch; these run on
//! stable in every `make test`, 256 cases each by default (`PROPTEST_CASES` for more).

use proptest::prelude::*;
use wsfleet::{
    config::parse_duration,
    protocol::{validate_session_id, ChannelMessage, ServerFrame},
};

proptest! {
    #[test]
    fn any_string_is_accepted_or_refused_as_a_session_id_never_a_panic(s in any::<String>()) {
        let ok = validate_session_id(&s).is_ok();
        let expected = s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        prop_assert_eq!(ok, expected);
    }

    #[test]
    fn valid_session_ids_are_accepted(s in "[A-Za-z0-9_-]{1,64}") {
        prop_assert!(validate_session_id(&s).is_ok());
    }

    #[test]
    fn durations_parse_or_fail_cleanly(s in any::<String>()) {
        let _ = parse_duration(&s);
    }

    #[test]
    fn durations_in_every_unit_round_trip(n in 0u64..1_000_000) {
        prop_assert_eq!(parse_duration(&format!("{n}ms")).unwrap().as_millis() as u64, n);
        prop_assert_eq!(parse_duration(&format!("{n}s")).unwrap().as_secs(), n);
        prop_assert_eq!(parse_duration(&n.to_string()).unwrap().as_secs(), n);
    }

    #[test]
    fn arbitrary_channel_payloads_never_panic(s in any::<String>()) {
        if let Ok(message) = serde_json::from_str::<ChannelMessage>(&s) {
            let _ = message.client_frame();
        }
    }

    #[test]
    fn broadcasts_of_any_json_reach_clients_unchanged(text in any::<String>(), n in any::<i64>()) {
        let message = serde_json::json!({ "text": text, "n": n, "list": [text.clone()] });
        let published = ChannelMessage::Broadcast { message: message.clone(), ts: "T".into() };
        let wire = serde_json::to_string(&published).unwrap();
        let received: ChannelMessage = serde_json::from_str(&wire).unwrap();
        let frame = received.client_frame().unwrap();
        match serde_json::from_str::<ServerFrame>(&frame).unwrap() {
            ServerFrame::Broadcast(b) => prop_assert_eq!(b.broadcast, message),
            other => prop_assert!(false, "parsed as {other:?}"),
        }
    }
}
