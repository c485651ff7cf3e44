//! Identity rules without a server: room patterns, `user`, the anonymous id, where the token
//! is read from. Tokens against a real server: tests/api/identity.rs.

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sign(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn in_an_hour() -> u64 {
    jsonwebtoken::get_current_timestamp() + 3600
}

fn with_rooms(rooms: &[&str]) -> Identity {
    Identity::from_claims(Claims {
        sub: "alice".into(),
        exp: in_an_hour(),
        rooms: Some(rooms.iter().map(|r| r.to_string()).collect()),
    })
}

#[test]
fn room_patterns_are_exact_names_or_literal_prefixes() {
    let cases: &[(&[&str], &str, bool)] = &[
        (&["lobby"], "lobby", true),
        (&["lobby"], "lobby2", false),
        (&["lobby"], "lob", false),
        (&["team:*"], "team:red", true),
        (&["team:*"], "team:", true),
        (&["team:*"], "team", false),
        (&["team:*"], "teams:red", false),
        // Only a trailing `*` is special; `.` and `*` elsewhere are literal.
        (&["a.*"], "abc", false),
        (&["a*b"], "a*b", true),
        (&["a*b"], "axb", false),
        (&["*"], "anything", true),
        (&[], "lobby", false),
        (&["x", "team:*"], "team:blue", true),
    ];
    for (patterns, room, allowed) in cases {
        assert_eq!(
            with_rooms(patterns).may_join(room),
            *allowed,
            "{patterns:?} joining {room:?}"
        );
    }
}

#[test]
fn no_rooms_claim_and_no_authentication_allow_every_room() {
    let claims = Claims {
        sub: "alice".into(),
        exp: in_an_hour(),
        rooms: None,
    };
    assert!(Identity::from_claims(claims).may_join("anything"));
    assert!(Identity::unverified("bob").may_join("anything"));
}

#[test]
fn only_a_verified_user_owns_sessions() {
    assert_eq!(with_rooms(&[]).owner(), Some("alice"));
    assert_eq!(Identity::unverified("bob").owner(), None);
}

#[test]
fn the_user_parameter_follows_its_rules_without_authentication() {
    let headers = HeaderMap::new();
    let ok = identify(None, &params(&[("user", "Alice_1.b-c")]), &headers, "s").unwrap();
    assert_eq!(&*ok.user, "Alice_1.b-c");
    let longest = "u".repeat(MAX_USER_LEN);
    assert!(identify(None, &params(&[("user", &longest)]), &headers, "s").is_ok());
    for bad in ["a b", "a/b", "ü", "a:b", &"u".repeat(MAX_USER_LEN + 1)] {
        assert!(
            matches!(
                identify(None, &params(&[("user", bad)]), &headers, "s"),
                Err(IdentityError::BadUser)
            ),
            "{bad:?}"
        );
    }
    // Absent or empty: the anonymous id.
    for none in [params(&[]), params(&[("user", "")])] {
        let anon = identify(None, &none, &headers, "s").unwrap();
        assert_eq!(*anon.user, anonymous_user("s"));
    }
}

#[test]
fn the_anonymous_id_is_stable_and_does_not_contain_the_session_id() {
    // SHA-256("demo") = 2a97516c354b68848cdbd8f54a226a0a55b21ed138e207ad6c5cbb9c00aa5aea
    assert_eq!(anonymous_user("demo"), "anon-2a97516c354b");
    let session = "3f2b8c1e-7d4a-4b9e-9c1f-2a6d8e0b5c7a";
    let id = anonymous_user(session);
    assert_eq!(id, anonymous_user(session));
    assert_eq!(id.len(), 17);
    assert!(!id.contains(&session[..8]));
    assert_ne!(id, anonymous_user("another"));
}

#[test]
fn the_token_comes_from_the_query_else_the_bearer_header_and_user_is_ignored() {
    let verifier = Verifier::hs256(SECRET);
    let alice = sign(json!({"sub": "alice", "exp": in_an_hour()}));
    let bob = sign(json!({"sub": "bob", "exp": in_an_hour()}));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        format!("Bearer {bob}").parse().unwrap(),
    );
    let from_query = identify(
        Some(&verifier),
        &params(&[("token", &alice), ("user", "mallory")]),
        &headers,
        "s",
    )
    .unwrap();
    assert_eq!(&*from_query.user, "alice");
    let from_header = identify(Some(&verifier), &params(&[]), &headers, "s").unwrap();
    assert_eq!(&*from_header.user, "bob");
    assert!(from_header.expires.is_some());
    let missing = identify(
        Some(&verifier),
        &params(&[("user", "mallory")]),
        &HeaderMap::new(),
        "s",
    );
    assert!(matches!(
        missing,
        Err(IdentityError::Token(TokenError::Missing))
    ));
}

#[test]
fn sub_must_be_a_short_printable_string() {
    let verifier = Verifier::hs256(SECRET);
    let exp = in_an_hour();
    for bad in [
        json!({"sub": "", "exp": exp}),
        json!({"sub": "a\nb", "exp": exp}),
        json!({"sub": "x".repeat(token::MAX_SUB_LEN + 1), "exp": exp}),
        json!({"sub": 7, "exp": exp}),
        json!({"sub": "a", "exp": exp, "rooms": "lobby"}),
    ] {
        assert_eq!(
            verifier.verify(&sign(bad.clone())).unwrap_err(),
            TokenError::Invalid,
            "{bad}"
        );
    }
    let ok = json!({"sub": "auth0|5f7c8ec7c33c6c004bbafe82", "exp": exp});
    assert!(verifier.verify(&sign(ok)).is_ok());
}

#[test]
fn a_public_key_that_is_not_rsa_or_p256_is_refused() {
    assert!(Verifier::from_public_key_pem(b"not a key").is_err());
    // A P-384 key (ES384), made with `openssl ecparam -name secp384r1`.
    let p384 = b"-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE/JnmZVj0P86+mBMCuqGc603FfF+y9Wl6
3GKIpa2R1BzOnCuT/0/AgvSdcg/XpEMQCWEwBM+nVPkp3Z/IZQRTHnpuvIf/DAKO
NfvFzUQeBZAHMnHLmoZSK8fZVkj7EGEg
-----END PUBLIC KEY-----
";
    let refused = Verifier::from_public_key_pem(p384).unwrap_err();
    assert!(refused.contains("P-256"), "{refused}");
}
