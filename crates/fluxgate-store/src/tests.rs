//! The store's tests, on SQLite and (when reachable) PostgreSQL.

use fluxgate_domain::{Role, Settings, UserId};

use super::*;

/// Runs `check` against a fresh SQLite file and, when reachable, a fresh PostgreSQL schema.
fn on_both_backends(check: impl Fn(&Store)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let sqlite = Store::open(path.to_str().unwrap(), &PoolOptions::default()).unwrap();
    check(&sqlite);
    if let Some(schema) = testing::fresh_postgres() {
        let pg = Store::open(&schema.url, &PoolOptions::default()).unwrap();
        check(&pg);
        drop(pg);
    }
}

fn new_user<'a>(name: &'a str, email: &'a str, role: Role) -> users::NewUser<'a> {
    users::NewUser {
        id: UserId::generate(),
        username: name,
        email,
        display_name: name,
        role,
        must_change_password: false,
        password_hash: Some("x"),
    }
}

#[test]
fn migrations_run_up_down_and_up_again() {
    let shipped = |b: &str| {
        std::fs::read_dir(format!(
            "{}/../../migrations/{b}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .count()
    };
    let n = shipped("sqlite");
    assert_eq!(
        n,
        shipped("postgres"),
        "both backends ship the same migrations"
    );
    on_both_backends(|store| {
        assert_eq!(store.migrate().unwrap().len(), n);
        assert!(
            store.migrate().unwrap().is_empty(),
            "second run applies nothing"
        );
        store.revert_all().unwrap();
        assert_eq!(store.migrate().unwrap().len(), n);
        let n = store.read(users::count).unwrap();
        assert_eq!(n, 0);
    });
}

#[test]
fn sqlite_runs_in_wal_mode_with_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().join("t.db").to_str().unwrap(),
        &PoolOptions::default(),
    )
    .unwrap();
    store.migrate().unwrap();
    // A session for a user that does not exist violates the foreign key.
    let err = store
        .write(|tx| {
            sessions::create(
                tx.conn,
                fluxgate_domain::SessionId::generate(),
                UserId::generate(),
                tx.now,
                tx.now + 1,
            )
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(dir.path().join("t.db-wal").exists());
}

#[test]
fn writes_commit_with_their_change_log_or_not_at_all() {
    on_both_backends(|store| {
        store.migrate().unwrap();
        let c = store
            .write(|tx| {
                let u = new_user("ann", "ann@example.com", Role::TeamAdmin);
                users::insert(tx.conn, &u, tx.now)?;
                tx.changed(changes::EntityKind::User, u.id.to_string());
                Ok::<_, StoreError>(u.id)
            })
            .unwrap();
        assert_eq!(c.revision, Some(1));
        // A failing closure rolls back the insert and its change-log entry.
        let r: Result<Committed<()>, StoreError> = store.write(|tx| {
            users::insert(
                tx.conn,
                &new_user("bob", "bob@example.com", Role::Requester),
                tx.now,
            )?;
            tx.changed(changes::EntityKind::User, "x");
            Err(StoreError::NotFound)
        });
        assert!(r.is_err());
        store
            .read(|conn| {
                assert_eq!(users::count(conn)?, 1);
                assert_eq!(changes::current(conn)?, 1);
                let dup = users::insert(
                    conn,
                    &new_user("ann", "other@example.com", Role::Requester),
                    0,
                );
                assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
                Ok::<_, StoreError>(())
            })
            .unwrap();
    });
}

#[test]
fn user_listing_filters_and_pages() {
    on_both_backends(|store| {
        store.migrate().unwrap();
        store
            .write(|tx| {
                for (name, role) in [
                    ("cat", Role::Approver),
                    ("amy", Role::Requester),
                    ("bo_b", Role::Requester),
                ] {
                    users::insert(
                        tx.conn,
                        &new_user(name, &format!("{name}@example.com"), role),
                        tx.now,
                    )?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        store
            .read(|conn| {
                let all = users::list(conn, &users::Filter::default(), None, 10)?;
                let names: Vec<_> = all.iter().map(|u| u.username.as_str()).collect();
                assert_eq!(names, ["amy", "bo_b", "cat"]);
                let page2 = users::list(
                    conn,
                    &users::Filter::default(),
                    Some(&users::After::Username("amy".into())),
                    1,
                )?;
                assert_eq!(page2[0].username, "bo_b");
                let req = users::Filter {
                    role: Some(Role::Requester),
                    ..Default::default()
                };
                assert_eq!(users::list(conn, &req, None, 10)?.len(), 2);
                // `_` is matched literally, not as a wildcard.
                let q = users::Filter {
                    query: Some("O_B".into()),
                    ..Default::default()
                };
                assert_eq!(users::list(conn, &q, None, 10)?.len(), 1);
                let q = users::Filter {
                    query: Some("a_y".into()),
                    ..Default::default()
                };
                assert_eq!(users::list(conn, &q, None, 10)?.len(), 0);
                assert_eq!(users::count_active_admins(conn, None)?, 0);
                Ok::<_, StoreError>(())
            })
            .unwrap();
    });
}

#[test]
fn audit_chain_verifies_and_detects_edits() {
    on_both_backends(|store| {
        store.migrate().unwrap();
        for i in 0..3 {
            store
                .write(|tx| {
                    audit::append(
                        tx.conn,
                        audit::NewEvent {
                            action: format!("test.{i}"),
                            target_type: "test".into(),
                            outcome: "success".into(),
                            ..Default::default()
                        },
                        tx.now,
                    )
                })
                .unwrap();
        }
        assert_eq!(store.read(audit::verify).unwrap(), None);
        store
            .read(|c| {
                use crate::schema::audit_events::dsl::*;
                diesel::update(audit_events.filter(seq.eq(2)))
                    .set(action.eq("forged"))
                    .execute(c)
                    .map_err(StoreError::from)
            })
            .unwrap();
        assert_eq!(store.read(audit::verify).unwrap(), Some(2));
    });
}

#[test]
fn settings_round_trip_and_version() {
    on_both_backends(|store| {
        store.migrate().unwrap();
        let mut s = Settings::default();
        assert_eq!(
            store
                .write(|tx| settings::save(tx.conn, &s, tx.now))
                .unwrap()
                .value,
            1
        );
        s.password_policy.min_length = 12;
        assert_eq!(
            store
                .write(|tx| settings::save(tx.conn, &s, tx.now))
                .unwrap()
                .value,
            2
        );
        let loaded = store.read(settings::load).unwrap().unwrap();
        assert_eq!(loaded.settings, s);
        assert_eq!(loaded.version, 2);
    });
}

#[test]
fn urls_choose_the_backend() {
    assert_eq!(
        Backend::from_url("postgres://h/db").unwrap().0,
        Backend::Postgres
    );
    assert_eq!(
        Backend::from_url("postgresql://h/db").unwrap().0,
        Backend::Postgres
    );
    assert_eq!(
        Backend::from_url("sqlite://a/b.db").unwrap(),
        (Backend::Sqlite, "a/b.db".into())
    );
    assert_eq!(
        Backend::from_url("fluxgate.db").unwrap(),
        (Backend::Sqlite, "fluxgate.db".into())
    );
    assert!(Backend::from_url("mysql://h/db").is_err());
    assert!(Backend::from_url("").is_err());
}

#[test]
fn a_lock_in_force_survives_failures_that_raced_past_it() {
    on_both_backends(|store| {
        store.migrate().unwrap();
        let fail = |now| {
            store
                .write(|tx| throttle::record_failure(tx.conn, "user:x", 3, 60_000_000, now))
                .unwrap()
                .value
        };
        for i in 0..2 {
            assert_eq!(fail(i).locked_until, None);
        }
        let locked = fail(2).locked_until.unwrap();
        // Attempts that were already past the lock check when it was set keep it in force.
        assert_eq!(fail(3).locked_until, Some(locked));
        assert_eq!(fail(4).locked_until, Some(locked));
        // Once it has expired, counting starts again.
        assert_eq!(fail(locked + 1).locked_until, None);
    });
}

#[test]
fn the_parties_migration_names_creators_from_the_audit_trail() {
    on_both_backends(|store| {
        store.migrate().unwrap();
        store.revert_through("2026-12-05-000008").unwrap();
        let (sa, k1, k2) = ("0190a5b1-0000-7000-8000-000000000001", "k1", "k2");
        let admin = "users/0190a5b1-0000-7000-8000-0000000000aa";
        let rotator = "users/0190a5b1-0000-7000-8000-0000000000bb";
        store
            .write(|tx| {
                diesel::sql_query(format!(
                    "INSERT INTO service_accounts (id, display_name, description, portfolio_id, \
                     role, active, created_at, updated_at, version, audit_writer) \
                     VALUES ('{sa}', 'bot', '', NULL, 'requester', TRUE, 1, 1, 1, FALSE)"
                ))
                .execute(tx.conn)?;
                for k in [k1, k2] {
                    diesel::sql_query(format!(
                        "INSERT INTO service_account_keys (id, service_account_id, display_name, \
                         secret_hash, created_at) VALUES ('{k}', '{sa}', 'key', 'h', 1)"
                    ))
                    .execute(tx.conn)?;
                }
                let event = |actor: &str, action: &str, target: String, detail: Option<String>| {
                    audit::NewEvent {
                        actor_id: Some(actor.into()),
                        action: action.into(),
                        target_type: "service_account".into(),
                        target_id: Some(target),
                        detail,
                        outcome: "success".into(),
                        ..Default::default()
                    }
                };
                for e in [
                    event(
                        admin,
                        "service_account.created",
                        format!("serviceAccounts/{sa}"),
                        None,
                    ),
                    event(
                        admin,
                        "service_account.key_created",
                        format!("serviceAccounts/{sa}/keys/{k1}"),
                        None,
                    ),
                    event(
                        rotator,
                        "service_account.key_rotated",
                        format!("serviceAccounts/{sa}/keys/{k1}"),
                        Some(format!(
                            "replaced by serviceAccounts/{sa}/keys/{k2}; grace 0 s"
                        )),
                    ),
                ] {
                    audit::append(tx.conn, e, tx.now)?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        store.migrate().unwrap();
        store
            .read(|conn| {
                let account = service_accounts::find(conn, sa)?.unwrap();
                assert_eq!(account.created_by.as_deref(), Some(admin));
                let mut by =
                    |id: &str| service_accounts::find_key(conn, id).map(|k| k.unwrap().created_by);
                assert_eq!(by(k1)?.as_deref(), Some(admin));
                assert_eq!(by(k2)?.as_deref(), Some(rotator));
                Ok::<_, StoreError>(())
            })
            .unwrap();
    });
}

/// A webhook claim is leased to its token: a release or a record under another token changes
/// nothing; a release under its own gives the never-attempted deliveries back, due at once.
#[test]
fn webhook_claims_are_settled_by_their_token() {
    use fluxgate_domain::WebhookId;
    use webhooks::{DeliveryState, Format, NewDelivery, Outcome};
    on_both_backends(|store| {
        store.migrate().unwrap();
        let hook = WebhookId::generate();
        store
            .write(|tx| {
                webhooks::insert(
                    tx.conn,
                    &webhooks::Webhook {
                        id: hook,
                        display_name: "hook".into(),
                        url: "https://example.com/hook".into(),
                        format: Format::Events,
                        event_types: vec!["*".into()],
                        secret: "whsec_x".into(),
                        previous_secret: None,
                        enabled: true,
                        cursor_seq: 0,
                        version: 1,
                        created_at: tx.now,
                        updated_at: tx.now,
                    },
                )?;
                for seq in 1..=3 {
                    let d = NewDelivery {
                        first_seq: seq,
                        last_seq: seq,
                        event_type: "user.created".into(),
                        payload: "{}".into(),
                    };
                    webhooks::enqueue(tx.conn, hook, d, tx.now)?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let hour = 3_600_000_000;
        let claim = |token: &'static str| {
            store
                .write(move |tx| webhooks::claim_run(tx.conn, hook, tx.now, hour, 10, token))
                .unwrap()
                .value
        };
        let due = || store.read(|c| webhooks::has_due(c, now_micros())).unwrap();
        let first = claim("t1");
        assert_eq!(first.len(), 3);
        assert!(!due(), "leased for an hour");
        let released = |token: &'static str| {
            store
                .write(move |tx| webhooks::release(tx.conn, token, tx.now))
                .unwrap()
                .value
        };
        assert_eq!(released("another"), 0);
        assert!(!due());
        assert_eq!(released("t1"), 3);
        assert!(due(), "given back, due at once");
        let again = claim("t2");
        assert_eq!(again.len(), 3);
        assert!(
            again.iter().all(|d| d.attempts == 1),
            "a release takes back the attempt"
        );
        // A record under the old claim's token comes too late; the current one counts.
        let record = |token: &'static str, id| {
            store
                .write(move |tx| {
                    webhooks::record(
                        tx.conn,
                        id,
                        &Outcome::Delivered { status: 204 },
                        tx.now,
                        token,
                    )
                })
                .unwrap();
            store
                .read(|c| webhooks::find_delivery(c, id))
                .unwrap()
                .unwrap()
                .state
        };
        assert_eq!(record("t1", again[0].id), DeliveryState::Pending);
        assert_eq!(record("t2", again[0].id), DeliveryState::Delivered);
        // What was recorded is not released with the rest.
        assert_eq!(released("t2"), 2);
    });
}

/// A text query answers exactly what a scan of every user would, whichever way it goes (the
/// scanned window, the trigram index), on every filter and order, page after page, and after
/// edits and deletions.
#[test]
fn user_search_answers_what_a_scan_would() {
    use users::{After, Filter};
    on_both_backends(|store| {
        store.migrate().unwrap();
        let names: Vec<(String, String, String)> = (0..1_300)
            .map(|i| {
                let domain = match i {
                    i if i % 397 == 0 => "rare-domain.test",
                    i if i % 3 == 0 => "corp.example",
                    _ => "example.com",
                };
                let display = match i % 4 {
                    0 => format!("Ann Zoë {i}"),
                    1 => format!("BOB_{i}%"),
                    2 => format!("carol \"c\" {i}"),
                    _ => format!("Dan {i}"),
                };
                (format!("u{i:05}"), format!("u{i}@{domain}"), display)
            })
            .collect();
        store
            .write(|tx| {
                for (i, (name, email, display)) in names.iter().enumerate() {
                    let role = [Role::Requester, Role::Approver, Role::TeamAdmin][i % 3];
                    let mut u = new_user(name, email, role);
                    u.display_name = display;
                    users::insert(tx.conn, &u, tx.now)?;
                    if i % 5 != 0 {
                        users::touch_login(tx.conn, u.id, (i as i64 % 17) * 1_000)?;
                    }
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let check = |store: &Store| {
            let everyone = store.read(users::all).unwrap();
            let queries = [
                "u0",
                "example",
                "u01234",
                "zoë",
                "ANN",
                "rare-domain",
                "%",
                "_",
                "\"c\"",
                "1",
                "12",
                "u397@",
                "nothing matches",
                "e.c",
                "ob_1",
            ];
            let filters = [
                Filter::default(),
                Filter {
                    role: Some(Role::Approver),
                    ..Default::default()
                },
                Filter {
                    by_last_sign_in: true,
                    ..Default::default()
                },
                Filter {
                    never_signed_in: Some(true),
                    ..Default::default()
                },
            ];
            for q in queries {
                for f in &filters {
                    let f = Filter {
                        query: Some(q.to_lowercase()),
                        ..f.clone()
                    };
                    let mut want: Vec<&users::User> = everyone
                        .iter()
                        .filter(|u| {
                            let text = format!(
                                "{}\n{}\n{}",
                                u.username,
                                u.email,
                                u.display_name.to_lowercase()
                            );
                            text.contains(&q.to_lowercase())
                                && f.role.is_none_or(|r| u.role == r)
                                && f.never_signed_in
                                    .is_none_or(|n| u.last_login_at.is_none() == n)
                        })
                        .collect();
                    let key = |u: &users::User| (u.last_login_at.unwrap_or(-1), u.username.clone());
                    if f.by_last_sign_in {
                        want.sort_by_key(|u| key(u));
                    } else {
                        want.sort_by_key(|u| u.username.clone());
                    }
                    let mut got = Vec::new();
                    let mut after = None;
                    loop {
                        let page = store
                            .read(|c| users::list(c, &f, after.as_ref(), 50))
                            .unwrap();
                        let Some(last) = page.last() else { break };
                        after = Some(if f.by_last_sign_in {
                            After::SignIn(last.last_login_at.unwrap_or(-1), last.username.clone())
                        } else {
                            After::Username(last.username.clone())
                        });
                        let full = page.len() == 50;
                        got.extend(page.into_iter().map(|u| u.id));
                        if !full {
                            break;
                        }
                    }
                    let want: Vec<UserId> = want.iter().map(|u| u.id).collect();
                    assert_eq!(got, want, "query {q:?}, filter {f:?}");
                }
            }
        };
        check(store);
        // Edits and deletions reach the index.
        store
            .write(|tx| {
                for u in users::all(tx.conn)?
                    .into_iter()
                    .filter(|u| u.username.as_str() < "u00100")
                {
                    if u.username.ends_with('7') {
                        users::delete(tx.conn, u.id)?;
                    } else {
                        let mut u = u.clone();
                        u.display_name = format!("Renamed ZOË {}", u.username);
                        users::update(tx.conn, &u, tx.now)?;
                    }
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        check(store);
    });
}

/// Where pg_trgm cannot be created (a role without CREATE on a database that lacks the
/// extension), the migrations go on without the trigram index and user search scans, with the
/// same answers.
#[test]
fn user_search_scans_where_pg_trgm_cannot_be_created() {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection, RunQueryDsl};
    let Some(probe) = testing::fresh_postgres() else {
        return;
    };
    drop(probe);
    let base = std::env::var("FLUXGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| testing::DEFAULT_POSTGRES_URL.into());
    let (server, _) = base.rsplit_once('/').unwrap();
    let host = server.rsplit_once('@').map_or(server, |(_, h)| h);
    let db = format!("fg_plain_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::establish(&base).unwrap();
    admin
        .batch_execute(
            "DO $$ BEGIN \
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fluxgate_plain') THEN \
             CREATE ROLE fluxgate_plain LOGIN; END IF; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
        )
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    let result = std::panic::catch_unwind(|| {
        let mut owner = PgConnection::establish(&format!("{server}/{db}")).unwrap();
        owner
            .batch_execute("CREATE SCHEMA plain AUTHORIZATION fluxgate_plain")
            .unwrap();
        drop(owner);
        let url = format!("postgres://fluxgate_plain@{host}/{db}?options=-csearch_path%3Dplain");
        let store = Store::open(&url, &PoolOptions::default()).unwrap();
        store.migrate().unwrap();
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let indexes = store
            .read(|c| {
                diesel::sql_query(
                    "SELECT count(*) AS n FROM pg_indexes WHERE indexname = 'users_search_trgm'",
                )
                .get_result::<Count>(c)
                .map_err(StoreError::from)
            })
            .unwrap();
        assert_eq!(indexes.n, 0, "no trigram index without pg_trgm");
        store
            .write(|tx| {
                for i in 0..700 {
                    let (name, email) = (format!("u{i:04}"), format!("u{i}@example.com"));
                    users::insert(tx.conn, &new_user(&name, &email, Role::Requester), tx.now)?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let filter = users::Filter {
            query: Some("u650@".into()),
            ..Default::default()
        };
        let found = store.read(|c| users::list(c, &filter, None, 50)).unwrap();
        assert_eq!(
            found
                .iter()
                .map(|u| u.username.as_str())
                .collect::<Vec<_>>(),
            ["u0650"]
        );
    });
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
