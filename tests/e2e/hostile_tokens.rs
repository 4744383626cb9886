//! Forged and doctored access tokens, sent to the real server: every one is refused with
//! UNAUTHENTICATED. The server runs with a known signing secret so that the test can forge
//! tokens that are correct in every way but one; a control token forged the same way but
//! correct in every way is accepted, which shows each refusal is for the intended reason.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fluxgate_proto::v1 as pb;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::{Backend, TestServer, authed, expect_code};

const SECRET: &str = "a-known-signing-secret-for-the-hostile-token-tests";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign(alg: Algorithm, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

async fn hostile_tokens_are_refused(b: Backend) {
    let s = TestServer::start_configured(b, |c| c.auth.jwt_secret = Some(SECRET.into())).await;
    let admin = s.admin_token().await;
    let rita = s
        .create_user(&admin, "rita", pb::Role::Requester, "Rita-pass-123")
        .await;
    let real = s
        .login("rita", "Rita-pass-123")
        .await
        .tokens
        .unwrap()
        .access_token;
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(real.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let admin_claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(admin.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let with = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = claims.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let who = |token: String| {
        let mut auth = s.auth();
        async move { auth.who_am_i(authed(pb::WhoAmIRequest {}, &token)).await }
    };

    // The control: forged with the secret and correct in every way, it is accepted.
    let control = sign(Algorithm::HS256, &with("iat", json!(now())), SECRET);
    let me = who(control).await.unwrap().into_inner();
    assert_eq!(me.principal, rita.name);

    let t = now();
    let hs256_parts: Vec<String> = real.split('.').map(str::to_owned).collect();
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none, no signature",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                hs256_parts[1]
            ),
        ),
        (
            "alg none, the original signature",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                hs256_parts[1],
                hs256_parts[2]
            ),
        ),
        (
            "HS512 with the right secret",
            sign(Algorithm::HS512, &claims, SECRET),
        ),
        (
            "HS384 with the right secret",
            sign(Algorithm::HS384, &claims, SECRET),
        ),
        (
            "header says RS256 over an HMAC signature",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "RS256", "typ": "JWT"})),
                hs256_parts[1],
                hs256_parts[2]
            ),
        ),
        (
            "signed with another secret",
            sign(
                Algorithm::HS256,
                &claims,
                "another-secret-of-enough-length-0123456",
            ),
        ),
        (
            "payload swapped for the admin's, rita's signature kept",
            format!(
                "{}.{}.{}",
                hs256_parts[0],
                b64(&admin_claims),
                hs256_parts[2]
            ),
        ),
        (
            "subject changed to the admin, signature kept",
            format!(
                "{}.{}.{}",
                hs256_parts[0],
                b64(&with("sub", admin_claims["sub"].clone())),
                hs256_parts[2]
            ),
        ),
        (
            "expired an hour ago",
            sign(
                Algorithm::HS256,
                &json!({"iss": claims["iss"], "aud": claims["aud"], "sub": claims["sub"],
                        "sid": claims["sid"], "typ": "access",
                        "iat": t - 7200, "nbf": t - 7200, "exp": t - 3600}),
                SECRET,
            ),
        ),
        (
            // No leeway past expiry (the review found tokens working ~5 s past it).
            "expired a second ago",
            sign(
                Algorithm::HS256,
                &json!({"iss": claims["iss"], "aud": claims["aud"], "sub": claims["sub"],
                        "sid": claims["sid"], "typ": "access",
                        "iat": t - 60, "nbf": t - 60, "exp": t - 1}),
                SECRET,
            ),
        ),
        (
            "not valid for another hour",
            sign(Algorithm::HS256, &with("nbf", json!(t + 3600)), SECRET),
        ),
        (
            "wrong audience",
            sign(Algorithm::HS256, &with("aud", json!("other")), SECRET),
        ),
        (
            "wrong issuer",
            sign(Algorithm::HS256, &with("iss", json!("evil")), SECRET),
        ),
        (
            "a refresh-type token",
            sign(Algorithm::HS256, &with("typ", json!("refresh")), SECRET),
        ),
        ("no expiry", sign(Algorithm::HS256, &without("exp"), SECRET)),
        (
            "no audience",
            sign(Algorithm::HS256, &without("aud"), SECRET),
        ),
        (
            "a session that does not exist",
            sign(
                Algorithm::HS256,
                &with("sid", json!("01a00000-0000-7000-8000-000000000000")),
                SECRET,
            ),
        ),
        (
            "a user that does not exist",
            sign(
                Algorithm::HS256,
                &with("sub", json!("01a00000-0000-7000-8000-000000000001")),
                SECRET,
            ),
        ),
        (
            "subject not an id",
            sign(Algorithm::HS256, &with("sub", json!("admin")), SECRET),
        ),
        ("oversized", format!("{}{}", real, "A".repeat(5000))),
    ];
    for (what, token) in cases {
        let r = who(token).await;
        let st = expect_code(r, Code::Unauthenticated);
        // Every bad token gets the same answer: nothing tells a forger which check failed.
        assert_eq!(
            st.message(),
            "missing, invalid or expired access token",
            "{what}"
        );
    }

    // A real token stops working at logout, and stays refused.
    let mut auth = s.auth();
    auth.logout(authed(pb::LogoutRequest {}, &real))
        .await
        .unwrap();
    for _ in 0..2 {
        expect_code(who(real.clone()).await, Code::Unauthenticated);
    }
}

crate::both_backends!(hostile_tokens_are_refused);
