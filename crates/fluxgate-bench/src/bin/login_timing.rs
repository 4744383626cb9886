//! Unknown user against wrong password: the two failed logins must not be told apart, by status,
//! message or time. Alternates N logins naming nobody with N logins giving a wrong password for
//! an existing account (each account and name tried once, so no lockout interferes), one at a
//! time, at the OWASP Argon2id parameters, and compares the latency distributions.
//!
//! The same for password-reset requests: an address with an account against one without.
//!
//! `login_timing [--n 100]`

use std::time::{Duration, Instant};

use fluxgate_bench::support::{arg, start_server_hashing, with};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
use fluxgate_proto::v1::password_reset_service_client::PasswordResetServiceClient;
use fluxgate_proto::v1::user_service_client::UserServiceClient;
use fluxgate_server::config::HashingConfig;
use tonic::transport::Channel;

fn pct(v: &[Duration], p: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

/// Prints the two latency distributions side by side and the difference of their medians.
fn compare(title: &str, sides: [(&str, &[Duration]); 2]) {
    println!("\n### {title}\n");
    println!("| | p10 ms | p50 ms | p90 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for (what, v) in &sides {
        let mut v = v.to_vec();
        v.sort();
        println!(
            "| {what} | {:.2} | {:.2} | {:.2} | {:.2} |",
            pct(&v, 0.1),
            pct(&v, 0.5),
            pct(&v, 0.9),
            pct(&v, 0.99)
        );
    }
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        pct(&v, 0.5)
    };
    let (a, b) = (median(sides[0].1), median(sides[1].1));
    println!(
        "\nDifference of medians: {:+.2} ms ({:+.1}% of the median)",
        b - a,
        (b - a) / a * 100.0
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = arg("--n").map_or(Ok(100), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let (addr, admin) = start_server_hashing(
        format!("sqlite://{}", dir.path().join("timing.db").display()),
        HashingConfig::default(),
    )
    .await?;
    let ch = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut users = UserServiceClient::new(ch.clone());
    for i in 0..n {
        users
            .create_user(with(
                &admin,
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        username: format!("real{i}"),
                        email: format!("real{i}@example.com"),
                        display_name: "R".into(),
                        role: pb::Role::Requester as i32,
                        ..Default::default()
                    }),
                    initial_password: "Right-pass-123".into(),
                    require_password_change: false,
                },
            ))
            .await?;
    }
    let mut auth = AuthServiceClient::new(ch.clone());
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    let mut answers = std::collections::BTreeSet::new();
    for i in 0..n {
        // Alternate which goes first, so that position in the pair cannot bias either side.
        let mut pair = [
            (format!("nobody{i}"), &mut unknown),
            (format!("real{i}"), &mut wrong),
        ];
        if i % 2 == 1 {
            pair.swap(0, 1);
        }
        for (name, sink) in pair {
            let t = Instant::now();
            let r = auth
                .login(pb::LoginRequest {
                    username: name,
                    password: "Wrong-pass-123".into(),
                    ..Default::default()
                })
                .await;
            sink.push(t.elapsed());
            let st = r
                .err()
                .ok_or_else(|| anyhow::anyhow!("a wrong login succeeded"))?;
            answers.insert(format!("{:?}: {}", st.code(), st.message()));
        }
    }
    compare(
        &format!("Failed logins: unknown user against wrong password ({n} each, one at a time)"),
        [("unknown user", &unknown), ("wrong password", &wrong)],
    );
    println!(
        "Distinct answers: {} ({})",
        answers.len(),
        answers.into_iter().collect::<Vec<_>>().join("; ")
    );

    // Reset requests: each address asked for once (no per-account limit interferes).
    let mut resets = PasswordResetServiceClient::new(ch);
    let (mut none, mut known) = (Vec::new(), Vec::new());
    for i in 0..n {
        let mut pair = [
            (format!("nobody{i}@example.com"), &mut none),
            (format!("real{i}@example.com"), &mut known),
        ];
        if i % 2 == 1 {
            pair.swap(0, 1);
        }
        for (email, sink) in pair {
            let t = Instant::now();
            resets
                .request_password_reset(pb::RequestPasswordResetRequest { email })
                .await?;
            sink.push(t.elapsed());
        }
    }
    compare(
        &format!(
            "Password-reset requests: an address with an account against one without ({n} each)"
        ),
        [("no account", &none), ("account", &known)],
    );
    Ok(())
}
