//! `fluxctl webhooks`: a subscription made, delivered to a receiver on loopback, its log read,
//! a message sent again, the secret rotated, the feed rewound, the subscription deleted.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

/// A minimal HTTP/1.1 receiver on 127.0.0.1 that answers every POST with 204 and counts them.
fn receiver() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    (port, count)
}

fn webhooks_from_the_command_line(b: Backend) {
    let server = TestServer::start_with(b, |c, _| {
        c.webhooks.allowed_private_networks = vec!["127.0.0.1/32".into()];
        c.webhooks.poll_ms = 50;
    });
    let dir = tempfile::tempdir().unwrap();
    let admin = Operator::new(&server.url, dir.path(), "admin");
    admin.login(ADMIN, ADMIN_PASSWORD).ok();
    let (port, received) = receiver();
    let url = format!("http://127.0.0.1:{port}/hook");

    // A private address is refused with the field named (exit 5).
    let refused = admin.run(&["webhooks", "create", "https://10.1.2.3/hook"]);
    refused.code(5);
    assert!(refused.stderr.contains("webhook.url"), "{refused:?}");

    let created = admin
        .run(&[
            "-o",
            "json",
            "webhooks",
            "create",
            &url,
            "--display-name",
            "sink",
            "--event-type",
            "user.created",
        ])
        .json();
    let name = text(&created, &["webhook", "name"]);
    assert!(text(&created, &["secret"]).starts_with("whsec_"));
    let list = admin.run(&["webhooks", "list"]).ok().to_owned();
    assert!(list.contains("sink") && list.contains(&url), "{list}");

    admin
        .with_env("FLUXGATE_NEW_PASSWORD", "Webhook-pass-1")
        .run(&[
            "users",
            "create",
            "bob",
            "--email",
            "bob@example.com",
            "--display-name",
            "Bob",
            "--role",
            "requester",
            "--with-password",
        ])
        .ok();
    let delivered = eventually(Duration::from_secs(10), || {
        let log = admin
            .run(&[
                "-o",
                "json",
                "webhooks",
                "deliveries",
                &name,
                "--state",
                "delivered",
            ])
            .json();
        log["deliveries"]
            .as_array()
            .filter(|d| !d.is_empty())
            .cloned()
    });
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["eventType"], "user.created");
    assert_eq!(delivered[0]["lastStatusCode"], 204);
    let delivery = delivered[0]["name"].as_str().unwrap().to_owned();
    let one = admin
        .run(&["-o", "json", "webhooks", "delivery", &delivery])
        .json();
    assert!(text(&one, &["delivery", "payload"]).contains("\"type\":\"user.created\""));

    admin.run(&["webhooks", "redeliver", &delivery]).ok();
    eventually(Duration::from_secs(10), || {
        (received.load(Ordering::SeqCst) >= 2).then_some(())
    });

    let rotated = admin
        .run(&[
            "-o",
            "json",
            "webhooks",
            "rotate-secret",
            &name,
            "--overlap",
            "1h",
        ])
        .json();
    assert!(text(&rotated, &["secret"]).starts_with("whsec_"));
    assert!(rotated["webhook"]["previousSecretExpireTime"].is_string());
    // Past the end of the trail: OUT_OF_RANGE, exit 5.
    admin
        .run(&["webhooks", "rewind", &name, "--after", "999999999"])
        .code(5);
    admin
        .run(&["webhooks", "rewind", &name, "--after", "0"])
        .ok();
    admin
        .run(&["webhooks", "update", &name, "--enabled", "false"])
        .ok();
    let shown = admin.run(&["-o", "json", "webhooks", "get", &name]).json();
    assert_eq!(shown["webhook"]["enabled"], false, "{shown:#}");
    let types = admin.run(&["webhooks", "event-types"]).ok().to_owned();
    assert!(types.lines().any(|l| l == "user.role_changed"), "{types}");
    admin.run(&["webhooks", "delete", &name]).ok();
    admin.run(&["webhooks", "get", &name]).code(3);
}

crate::both_backends!(webhooks_from_the_command_line);
