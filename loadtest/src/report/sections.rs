//! The report's sections that only some runs have: `fan_out` (fan-out scenario), `resume`
//! (resume scenario), `disruption` (with `--during`) and `recovery` (rooms and fan-out with
//! `--resume`). Kept apart from the headline numbers
//! so each scenario adds its part without touching the others.

use serde::Serialize;

use super::Report;
use crate::{
    scenario::during,
    stats::{Resumes, Totals},
    verify::offsets::OffsetBreaks,
};

/// Fan-out: what was published and what arrived.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FanOut {
    /// Broadcasts the run set out to publish (--broadcasts).
    pub broadcasts: u64,
    /// Sockets connected × broadcasts.
    pub expected_deliveries: u64,
    /// Broadcasts received, each socket counting each broadcast once.
    pub deliveries: u64,
}

/// Rooms: what was published to the rooms, and what their members received.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rooms {
    pub rooms: u64,
    pub members_per_room: u64,
    pub publishers_per_room: u64,
    /// Publications per second per room (--rate).
    pub rate_per_room: f64,
    /// Publications each room was to get (rate × duration).
    pub publications_per_room: u64,
    /// `message` commands sent, all rooms.
    pub published: u64,
    /// Members that joined × the publications of their room.
    pub expected_deliveries: u64,
    /// Publications received, each member counting each offset once.
    pub deliveries: u64,
    pub deliveries_per_second: f64,
    /// Offsets a member never received, received twice, received after a higher one.
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl Rooms {
    pub fn new(plan: &crate::scenario::rooms::Plan, totals: &Totals, run_seconds: f64) -> Self {
        Rooms {
            rooms: plan.rooms,
            members_per_room: plan.layout.members as u64,
            publishers_per_room: plan.publishers,
            rate_per_room: plan.rate,
            publications_per_room: plan.publications,
            published: totals.sent,
            expected_deliveries: totals.connections_ok * plan.publications,
            deliveries: totals.received,
            deliveries_per_second: super::per_second(totals.received, run_seconds),
            lost: totals.rooms.lost,
            duplicated: totals.rooms.duplicated,
            out_of_order: totals.rooms.out_of_order,
        }
    }
}

/// Resume: the planned resumes and how their welcomes continued.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResumeSummary {
    pub resumes_ok: u64,
    pub resumes_failed: u64,
    /// Welcomes the server repaired from our `last_count` (it had lost the counter).
    pub repaired: u64,
}

impl ResumeSummary {
    pub fn from_totals(resumes: &Resumes) -> Self {
        Self {
            resumes_ok: resumes.resumes_ok,
            resumes_failed: resumes.resumes_failed,
            repaired: resumes.repaired,
        }
    }
}

/// `--during`: the command, and what the sockets saw while it ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disruption {
    pub command: String,
    /// The shell's exit code; null when it did not start, was killed, or overran --timeout.
    pub exit_code: Option<i32>,
    pub command_seconds: f64,
    /// Sockets the server closed that came back on their session.
    pub reconnects: u64,
    /// Longest time from losing a socket to the welcome of its replacement.
    pub longest_gap_ms: f64,
    /// Counter numbers never seen (gaps), and numbers seen twice (repeats).
    pub counts_lost: u64,
    pub counts_repeated: u64,
    /// Welcomes the server repaired from our `last_count` (it had lost the counter).
    pub repaired: u64,
}

impl Disruption {
    pub fn new(command: &during::Outcome, resumes: &Resumes) -> Self {
        Self {
            command: command.command.clone(),
            exit_code: command.exit_code,
            command_seconds: command.seconds,
            reconnects: resumes.reconnects,
            longest_gap_ms: resumes.longest_gap_us as f64 / 1000.0,
            counts_lost: resumes.counts_lost,
            counts_repeated: resumes.counts_repeated,
            repaired: resumes.repaired,
        }
    }
}

/// `--resume` (rooms, fan-out): how the sockets the server closed recovered their streams.
/// Every offset once and in order is the verdict (`lost`, `duplicated`, `out_of_order` all
/// 0), and every recovering answer said `recovered: true` (`not_recovered` 0).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovery {
    /// Sockets the server closed that came back on their session.
    pub reconnects: u64,
    /// Longest time from losing a socket to the welcome of its replacement.
    pub longest_gap_ms: f64,
    /// Welcomes or rejoins after `since` that did not say `recovered: true` (violations).
    pub not_recovered: u64,
    /// Publications sent again (same client id) after a reconnect, not having been seen back.
    pub resent: u64,
    /// Offsets of the stream (the rooms', or the broadcast stream's) never received,
    /// received twice, received after a higher one, over every socket.
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl Recovery {
    pub fn new(resumes: &Resumes, breaks: &OffsetBreaks) -> Self {
        Self {
            reconnects: resumes.reconnects,
            longest_gap_ms: resumes.longest_gap_us as f64 / 1000.0,
            not_recovered: resumes.not_recovered,
            resent: resumes.resent,
            lost: breaks.lost,
            duplicated: breaks.duplicated,
            out_of_order: breaks.out_of_order,
        }
    }
}

/// Table rows for the sections present.
pub(super) fn rows(report: &Report, row: &mut impl FnMut(&str, String)) {
    if let Some(f) = &report.fan_out {
        row(
            "broadcasts delivered / expected",
            format!(
                "{} / {} ({} broadcasts)",
                f.deliveries, f.expected_deliveries, f.broadcasts
            ),
        );
    }
    if let Some(r) = &report.rooms {
        row(
            "rooms × members (publishers)",
            format!(
                "{} × {} ({} each)",
                r.rooms, r.members_per_room, r.publishers_per_room
            ),
        );
        row(
            "publications sent / planned",
            format!(
                "{} / {} ({}/s per room)",
                r.published,
                r.rooms * r.publications_per_room,
                r.rate_per_room
            ),
        );
        row(
            "deliveries / expected",
            format!(
                "{} / {} ({:.0}/s)",
                r.deliveries, r.expected_deliveries, r.deliveries_per_second
            ),
        );
        row(
            "lost / duplicated / out of order",
            format!("{} / {} / {}", r.lost, r.duplicated, r.out_of_order),
        );
    }
    if let Some(r) = &report.redis {
        row(
            "redis memory per socket",
            format!(
                "{:.0} B ({} → {} B)",
                r.memory_per_socket_bytes, r.memory_before_bytes, r.memory_connected_bytes
            ),
        );
        if let (Some(commands), Some(per)) = (&r.commands, r.commands_per_publication) {
            let total: u64 = commands.values().sum();
            row(
                "redis commands per publication",
                format!(
                    "{per:.2} ({total} in {:.1} s)",
                    r.commands_seconds.unwrap_or(0.0)
                ),
            );
        }
    }
    if let Some(r) = &report.resume {
        row(
            "resumes ok / failed",
            format!("{} / {}", r.resumes_ok, r.resumes_failed),
        );
        row("welcomes repaired", r.repaired.to_string());
    }
    if let Some(d) = &report.disruption {
        let exit = d
            .exit_code
            .map_or_else(|| "none".to_string(), |c| c.to_string());
        row(
            "during command",
            format!("{} (exit {exit}, {:.2} s)", d.command, d.command_seconds),
        );
        row("reconnects", d.reconnects.to_string());
        row("longest gap ms", format!("{:.1}", d.longest_gap_ms));
        row(
            "counts lost / repeated",
            format!("{} / {}", d.counts_lost, d.counts_repeated),
        );
        row("welcomes repaired", d.repaired.to_string());
    }
    if let Some(r) = &report.recovery {
        row(
            "recovery: reconnects / not recovered / resent",
            format!("{} / {} / {}", r.reconnects, r.not_recovered, r.resent),
        );
        row(
            "recovery: offsets lost / duplicated / out of order",
            format!("{} / {} / {}", r.lost, r.duplicated, r.out_of_order),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample;

    #[test]
    fn sections_appear_in_the_table_and_the_json_only_when_present() {
        let mut r = sample();
        let plain = serde_json::to_value(&r).unwrap();
        for absent in [
            "fan_out",
            "rooms",
            "resume",
            "disruption",
            "redis",
            "recovery",
        ] {
            assert!(plain.get(absent).is_none(), "{absent} in {plain}");
        }
        let resumes = Resumes {
            reconnects: 4,
            longest_gap_us: 1_234_500,
            counts_repeated: 1,
            resumes_ok: 6,
            repaired: 2,
            ..Resumes::default()
        };
        r.fan_out = Some(FanOut {
            broadcasts: 3,
            expected_deliveries: 30,
            deliveries: 29,
        });
        r.resume = Some(ResumeSummary::from_totals(&resumes));
        r.rooms = Some(Rooms {
            rooms: 2,
            members_per_room: 5,
            publishers_per_room: 1,
            rate_per_room: 10.0,
            publications_per_room: 4,
            published: 8,
            expected_deliveries: 40,
            deliveries: 39,
            deliveries_per_second: 19.5,
            lost: 1,
            duplicated: 2,
            out_of_order: 3,
        });
        let command = during::Outcome {
            command: "kill -TERM 42".into(),
            exit_code: Some(0),
            seconds: 0.25,
            failure: None,
        };
        r.disruption = Some(Disruption::new(&command, &resumes));
        let breaks = OffsetBreaks {
            lost: 7,
            duplicated: 0,
            out_of_order: 0,
        };
        let recovering = Resumes {
            not_recovered: 1,
            resent: 5,
            ..resumes.clone()
        };
        r.recovery = Some(Recovery::new(&recovering, &breaks));
        let table = r.table();
        for needle in [
            "29 / 30 (3 broadcasts)",
            "2 × 5 (1 each)",
            "8 / 8 (10/s per room)",
            "39 / 40 (20/s)",
            "1 / 2 / 3",
            "resumes ok / failed",
            "kill -TERM 42 (exit 0, 0.25 s)",
            "longest gap ms",
            "1234.5",
            "0 / 1",
            "welcomes repaired",
            "4 / 1 / 5",
            "7 / 0 / 0",
        ] {
            assert!(table.contains(needle), "missing {needle:?} in\n{table}");
        }
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["fan_out"]["expected_deliveries"], 30);
        assert_eq!(json["resume"]["resumes_ok"], 6);
        assert_eq!(json["rooms"]["out_of_order"], 3);
        assert_eq!(json["disruption"]["reconnects"], 4);
        assert_eq!(json["disruption"]["exit_code"], 0);
        assert_eq!(json["disruption"]["counts_lost"], 0);
        assert_eq!(json["disruption"]["repaired"], 2);
        assert_eq!(json["resume"]["repaired"], 2);
        assert_eq!(json["recovery"]["not_recovered"], 1);
        assert_eq!(json["recovery"]["lost"], 7);
        assert_eq!(json["recovery"]["longest_gap_ms"], 1234.5);
    }
}
