//! The increment script's rules, case by case, against a real Redis: what each combination of
//! stored state and attempt answers (src/counter/scripts.rs). The integration tests break the
//! rules' preconditions end to end; this table also covers the one they cannot stage (an old
//! attempt delivered after a later one, which needs a reconnect to reorder commands).

use fred::{
    interfaces::{ClientLike, HashesInterface, KeysInterface},
    types::{CustomCommand, Value},
};
use wsfleet::counter::INCREMENT_BATCH_LUA;

use crate::helpers::RedisServer;

const KEY: &str = "wsfleet:session:rules";

/// Stored state (`w`, `n`), the attempt (token, in doubt, floor), and what must come of it.
struct Case {
    w: Option<&'static str>,
    n: Option<i64>,
    token: &'static str,
    unsure: &'static str,
    floor: i64,
    answer: i64,
    /// The counter afterwards.
    after: i64,
}

#[tokio::test]
async fn each_state_and_attempt_gets_the_documented_answer() {
    let redis = RedisServer::start().await;
    let client = redis.client().await;
    let cases = [
        // the writer counts on from n
        Case {
            w: Some("me"),
            n: Some(5),
            token: "me",
            unsure: "0",
            floor: 5,
            answer: 6,
            after: 6,
        },
        // another socket claimed the session: refused, nothing counted
        Case {
            w: Some("other"),
            n: Some(5),
            token: "me",
            unsure: "0",
            floor: 5,
            answer: -1,
            after: 5,
        },
        Case {
            w: Some("other"),
            n: Some(5),
            token: "me",
            unsure: "1",
            floor: 5,
            answer: -1,
            after: 5,
        },
        // an attempt in doubt ran late (n above the floor): the resend gets its count again
        Case {
            w: Some("me"),
            n: Some(6),
            token: "me",
            unsure: "1",
            floor: 5,
            answer: 6,
            after: 6,
        },
        // n above the floor and nothing in doubt: an old attempt after a later one, refused
        Case {
            w: Some("me"),
            n: Some(6),
            token: "me",
            unsure: "0",
            floor: 5,
            answer: -2,
            after: 6,
        },
        // Redis went back (older dump): count on above the floor, not from n
        Case {
            w: Some("me"),
            n: Some(3),
            token: "me",
            unsure: "0",
            floor: 6,
            answer: 7,
            after: 7,
        },
        // Redis lost the session: the socket claims it again above its floor
        Case {
            w: None,
            n: None,
            token: "me",
            unsure: "0",
            floor: 6,
            answer: 7,
            after: 7,
        },
        Case {
            w: None,
            n: None,
            token: "me",
            unsure: "1",
            floor: 6,
            answer: 7,
            after: 7,
        },
        // a new session's first message
        Case {
            w: Some("me"),
            n: None,
            token: "me",
            unsure: "0",
            floor: 0,
            answer: 1,
            after: 1,
        },
    ];
    for Case {
        w,
        n,
        token,
        unsure,
        floor,
        answer,
        after,
    } in cases
    {
        let _: i64 = client.del(KEY).await.unwrap();
        if let Some(w) = w {
            let _: i64 = client.hset(KEY, ("w", w)).await.unwrap();
        }
        if let Some(n) = n {
            let _: i64 = client.hset(KEY, ("n", n)).await.unwrap();
        }
        let got: Value = client
            .custom(
                CustomCommand::new_static("EVAL", None, false),
                vec![
                    Value::from(INCREMENT_BATCH_LUA),
                    Value::from(1),
                    Value::from(KEY),
                    Value::from(60_000),
                    Value::from(token),
                    Value::from(unsure),
                    Value::from(floor),
                ],
            )
            .await
            .unwrap();
        let case = format!("w={w:?} n={n:?} token={token} unsure={unsure} floor={floor}");
        assert_eq!(got, Value::Array(vec![Value::Integer(answer)]), "{case}");
        let stored: Option<i64> = client.hget(KEY, "n").await.unwrap();
        assert_eq!(
            stored,
            Some(after).filter(|_| n.is_some() || answer > 0),
            "{case}"
        );
        let w_after: Option<String> = client.hget(KEY, "w").await.unwrap();
        let expected_w = if answer == -1 { w } else { Some("me") };
        assert_eq!(w_after.as_deref(), expected_w, "{case}");
    }
}

/// In a Redis Cluster, a batch's sessions are in nearly as many slots as it has messages, and a
/// script's declared keys must share one: `INCREMENT_BATCH_LUA` over two slots is refused
/// (CROSSSLOT). `INCREMENT_NODE_BATCH_LUA` declares the first key only and counts sessions of
/// several slots of that node; a session another node serves (its slot moved, or a stale slot
/// map) fails its entry alone, and the others still count.
#[tokio::test]
async fn the_node_script_counts_sessions_of_several_slots_of_one_node_and_fails_a_foreign_one_alone(
) {
    use wsfleet::counter::INCREMENT_NODE_BATCH_LUA;
    let mut cluster = crate::common::RedisCluster::start().await;
    let primaries = cluster.primaries();
    let home = primaries[0].port;
    // Sessions by the node serving them: three of `home` in three slots, one elsewhere.
    let (mut local, mut foreign) = (Vec::new(), None);
    for i in 0..10_000 {
        let key = format!("wsfleet:session:node-{i}");
        let slot = fred::util::redis_keyslot(key.as_bytes());
        match cluster.primary_of(slot) {
            Some(port) if port == home => {
                let slots: Vec<u16> = local
                    .iter()
                    .map(|k: &String| fred::util::redis_keyslot(k.as_bytes()))
                    .collect();
                if local.len() < 3 && !slots.contains(&slot) {
                    local.push(key);
                }
            }
            Some(_) if foreign.is_none() => foreign = Some(key),
            _ => {}
        }
        if local.len() == 3 && foreign.is_some() {
            break;
        }
    }
    let foreign = foreign.expect("a session on another primary");
    let client = cluster.server(home).client().await;
    let eval = |lua: &'static str, keys: &[&String], entries: &[(&String, &str)]| {
        let mut call = vec![Value::from(lua), Value::from(keys.len() as i64)];
        call.extend(keys.iter().map(|k| Value::from(k.as_str())));
        call.push(Value::from(60_000));
        for (key, per_entry) in entries {
            if lua == INCREMENT_NODE_BATCH_LUA {
                call.push(Value::from(key.as_str()));
            }
            call.extend(per_entry.split(' ').map(Value::from));
        }
        client.custom::<Value, _>(CustomCommand::new_static("EVAL", None, false), call)
    };

    let refused = eval(
        INCREMENT_BATCH_LUA,
        &[&local[0], &local[1]],
        &[(&local[0], "t 0 0"), (&local[1], "t 0 0")],
    )
    .await
    .expect_err("two slots in one INCREMENT_BATCH_LUA");
    assert!(refused.details().contains("CROSSSLOT"), "{refused:?}");

    let counted = eval(
        INCREMENT_NODE_BATCH_LUA,
        &[&local[0]],
        &[
            (&local[0], "t 0 0"),
            (&foreign, "t 0 0"),
            (&local[1], "t 0 0"),
            (&local[2], "t 0 0"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        counted,
        Value::Array(vec![
            Value::Integer(1),
            Value::Null,
            Value::Integer(1),
            Value::Integer(1)
        ])
    );
    for key in &local {
        let n: Option<i64> = client.hget(key.as_str(), "n").await.unwrap();
        assert_eq!(n, Some(1), "{key}");
    }
}
