//! Messages from the Redis pub/sub channel, as every instance parses them: arbitrary bytes
//! never panic, and a message that parses becomes a client frame that a client parses back
//! into the same broadcast or heartbeat.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsfleet::protocol::{ChannelMessage, ServerFrame};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = serde_json::from_slice::<ChannelMessage>(data) else {
        return;
    };
    let Some(frame) = message.client_frame() else {
        assert!(matches!(message, ChannelMessage::Probe { .. }));
        return;
    };
    let parsed: ServerFrame =
        serde_json::from_str(&frame).unwrap_or_else(|e| panic!("{frame:?} does not parse: {e}"));
    match (&message, parsed) {
        (ChannelMessage::Broadcast { message, ts }, ServerFrame::Broadcast(b)) => {
            assert_eq!(&b.broadcast, message);
            assert_eq!(&b.ts, ts);
        }
        (ChannelMessage::Heartbeat { ts }, ServerFrame::Heartbeat(h)) => assert_eq!(&h.ts, ts),
        (sent, got) => panic!("{sent:?} reached the client as {got:?}"),
    }
});
