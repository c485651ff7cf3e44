//! The label values of every labelled family, one list per family. Each list is used twice:
//! at start-up every series it names is created at 0 (so dashboards and alerts read 0, not "no
//! data"), and at record time a value outside it counts as `other` (so no input, such as a
//! client's close code, can create series without bound).

use std::{fmt::Write as _, ops::Deref};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::family::{Family, MetricConstructor},
};

use crate::protocol::close_code;

/// The value every family uses for what its list does not name.
pub const OTHER: &str = "other";

/// `wsfleet_connections_closed_total{code}`: the codes this server closes with
/// (`protocol::close_code`), plus 1000 (normal), 1005 (a close frame without a code), 1006 (no
/// close frame at all) and 1011 (a peer's internal error). A client may close with any code
/// from 1000 to 4999; the others count as `other`.
pub const CLOSE_CODES: &[u16] = &[
    1000,
    close_code::GOING_AWAY,
    close_code::PROTOCOL_ERROR,
    close_code::UNSUPPORTED_DATA,
    1005,
    1006,
    close_code::INVALID_PAYLOAD,
    close_code::POLICY_VIOLATION,
    close_code::MESSAGE_TOO_BIG,
    1011,
    close_code::TRY_AGAIN_LATER,
];

/// `wsfleet_upgrades_rejected_total{reason}`: every reason `src/ws/mod.rs` passes to
/// [`super::Metrics::rejected`].
pub const REJECT_REASONS: &[&str] = &[
    "bad_session",
    "capacity",
    "draining",
    "forbidden",
    "not_websocket",
    "origin",
    "redis_unavailable",
    "unauthorized",
];

/// `wsfleet_redis_errors_total{operation}` and `wsfleet_redis_command_duration_seconds
/// {operation}`: every operation name given to `Store::timed`, `Store::run` and the batching
/// writers (`src/counter/`, `src/registry_writes.rs`). A new Redis call needs its name here,
/// or it is recorded as `other` (and a warning says so).
pub const REDIS_OPERATIONS: &[&str] = &[
    "increment",
    "claim",
    "touch",
    "register",
    "unregister",
    "renew",
    "snapshot",
    "resync",
    "heartbeat",
    "heartbeat_release",
    "publish",
    "ping",
    "deregister",
    "room_join",
    "room_take",
    "room_leave",
    "room_release",
    "room_renew",
    "room_publish",
    "room_info",
    "room_remember",
    "history_read",
];

/// A close code as a label value: one of [`CLOSE_CODES`] or `other`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CloseCodeValue {
    Known(u16),
    Other,
}

impl CloseCodeValue {
    pub fn of(code: u16) -> Self {
        if CLOSE_CODES.contains(&code) {
            CloseCodeValue::Known(code)
        } else {
            CloseCodeValue::Other
        }
    }
}

impl EncodeLabelValue for CloseCodeValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            CloseCodeValue::Known(code) => write!(encoder, "{code}"),
            CloseCodeValue::Other => encoder.write_str(OTHER),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: CloseCodeValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: &'static str,
}

/// `value` if `known` lists it, else `other`, with a (rate-limited) warning: an unknown value
/// here is a name the code uses but the list forgot.
pub(super) fn known_or_other(
    family: &'static str,
    known: &[&'static str],
    value: &'static str,
) -> &'static str {
    if known.contains(&value) {
        return value;
    }
    crate::warn_throttled!(
        family,
        value,
        "metric label value missing from its list in src/metrics/labels.rs; counted as other"
    );
    OTHER
}

/// The Redis families: recording goes through [`OperationFamily::get_or_create`], which keeps
/// the `operation` label within [`REDIS_OPERATIONS`] (plus `other`). Cloning shares the series.
#[derive(Debug, Clone)]
pub struct OperationFamily<M, C = fn() -> M>(Family<OperationLabel, M, C>);

impl<M, C: MetricConstructor<M>> OperationFamily<M, C> {
    pub fn new(family: Family<OperationLabel, M, C>) -> Self {
        OperationFamily(family)
    }

    /// The series of `label`, or of `other` when its operation is not in the list.
    pub fn get_or_create(&self, label: &OperationLabel) -> impl Deref<Target = M> + '_ {
        let operation = known_or_other("redis operation", REDIS_OPERATIONS, label.operation);
        self.0.get_or_create(&OperationLabel { operation })
    }

    /// Creates every known series (and `other`) at 0.
    pub fn create_all(&self) {
        for operation in REDIS_OPERATIONS.iter().chain([&OTHER]) {
            let _ = self.0.get_or_create(&OperationLabel { operation });
        }
    }

    /// The family itself, for registering.
    pub fn family(&self) -> &Family<OperationLabel, M, C> {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_have_no_duplicates_and_no_other() {
        let mut codes = CLOSE_CODES.to_vec();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), CLOSE_CODES.len());
        for list in [REJECT_REASONS, REDIS_OPERATIONS] {
            let mut names = list.to_vec();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), list.len(), "{list:?}");
            assert!(!list.contains(&OTHER));
        }
    }

    #[test]
    fn unknown_codes_and_names_become_other() {
        assert_eq!(CloseCodeValue::of(1008), CloseCodeValue::Known(1008));
        assert_eq!(CloseCodeValue::of(4321), CloseCodeValue::Other);
        assert_eq!(CloseCodeValue::of(0), CloseCodeValue::Other);
        assert_eq!(known_or_other("t", REJECT_REASONS, "origin"), "origin");
        assert_eq!(known_or_other("t", REJECT_REASONS, "made_up"), OTHER);
    }
}
