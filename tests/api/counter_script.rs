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

#[tokio::test]
async fn each_state_and_attempt_gets_the_documented_answer() {
    let redis = RedisServer::start().await;
    let client = redis.client().await;
    // (stored w, stored n, attempt's token, unsure, floor) -> (answer, n afterwards)
    let cases: &[(Option<&str>, Option<i64>, &str, &str, i64, i64, i64)] = &[
        // the writer counts on from n
        (Some("me"), Some(5), "me", "0", 5, 6, 6),
        // another socket claimed the session: refused, nothing counted
        (Some("other"), Some(5), "me", "0", 5, -1, 5),
        (Some("other"), Some(5), "me", "1", 5, -1, 5),
        // an attempt in doubt ran late (n above the floor): the resend gets its count again
        (Some("me"), Some(6), "me", "1", 5, 6, 6),
        // n above the floor and nothing in doubt: an old attempt after a later one, refused
        (Some("me"), Some(6), "me", "0", 5, -2, 6),
        // Redis went back (older dump): count on above the floor, not from n
        (Some("me"), Some(3), "me", "0", 6, 7, 7),
        // Redis lost the session: the socket claims it again above its floor
        (None, None, "me", "0", 6, 7, 7),
        (None, None, "me", "1", 6, 7, 7),
        // a new session's first message
        (Some("me"), None, "me", "0", 0, 1, 1),
    ];
    for &(w, n, token, unsure, floor, answer, after) in cases {
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
