//! Use cases run directly against the store, without a server or a transport, on SQLite and (when
//! reachable) PostgreSQL: the rules can be tested where they live.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use fluxgate_authz::{Facts, PrincipalFacts, Snapshot};
use fluxgate_core::names::UserRef;
use fluxgate_core::users::{Lifecycle, Step};
use fluxgate_core::{Actor, Command, Ctx, Error, Limits, Origin};
use fluxgate_domain::{PrincipalId, Refusal, Role, UserId};
use fluxgate_store::{PoolOptions, Store, audit, testing, users};

fn on_both_backends(check: impl Fn(&Store)) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(
        dir.path().join("t.db").to_str().unwrap(),
        &PoolOptions::default(),
    )
    .unwrap();
    sqlite.migrate().unwrap();
    check(&sqlite);
    if let Some(schema) = testing::fresh_postgres() {
        let pg = Store::open(&schema.url, &PoolOptions::default()).unwrap();
        pg.migrate().unwrap();
        check(&pg);
    }
}

fn team_admin(store: &Store, name: &str) -> UserId {
    let id = UserId::generate();
    let email = format!("{name}@example.com");
    let new = users::NewUser {
        id,
        username: name,
        email: &email,
        display_name: name,
        role: Role::TeamAdmin,
        must_change_password: false,
        password_hash: Some("x"),
    };
    store
        .write(|tx| users::insert(tx.conn, &new, tx.now))
        .unwrap();
    id
}

fn actor(id: UserId, name: &str) -> Actor {
    Actor {
        id: PrincipalId::User(id),
        session_id: None,
        key_id: None,
        name: name.into(),
        role: Role::TeamAdmin,
        active: true,
        must_change_password: false,
    }
}

/// Checks a command on the snapshot, then applies it in one write, as the server's runner does.
fn run<C: Command>(
    store: &Store,
    snap: &Snapshot,
    who: &Actor,
    cmd: C,
) -> Result<C::Output, Error> {
    let origin = Origin::default();
    let limits = Limits::default();
    let cx = Ctx {
        actor: Some(who),
        origin: &origin,
        snap,
        outbox: None,
        limits: &limits,
    };
    cmd.check(&cx)?;
    Ok(store.write(|tx| cmd.apply(&cx, tx))?.value)
}

fn events(store: &Store) -> i64 {
    store.read(audit::verify_counting).unwrap().1
}

#[test]
fn the_last_active_team_admin_stays_even_against_a_stale_snapshot() {
    on_both_backends(|store| {
        let (a, b) = (team_admin(store, "ada"), team_admin(store, "bob"));
        // The engine's view, taken before anything below happens: both are active admins.
        let mut facts = Facts::default();
        for id in [a, b] {
            let f = PrincipalFacts {
                role: Role::TeamAdmin,
                active: true,
                must_change_password: false,
                second_factor_overdue: false,
                portfolio: None,
                audit_writer: false,
                provisioner: false,
                acts_for: BTreeSet::new(),
            };
            facts.principals.insert(PrincipalId::User(id), f);
        }
        let snap = Snapshot::compile(&facts, 1);
        let deactivate = |r: UserId| Lifecycle {
            user: UserRef::Id(r),
            etag: String::new(),
            step: Step::Deactivate,
        };

        let bob = run(store, &snap, &actor(a, "ada"), deactivate(b))
            .unwrap()
            .unwrap();
        assert!(!bob.active);
        let before = events(store);

        // Bob, still active in the stale snapshot, tries to deactivate the last active admin:
        // the rule is read under the write lock, and the refusal writes nothing.
        let e = run(store, &snap, &actor(b, "bob"), deactivate(a)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Refused(Refusal::LastTeamAdmin { what: "deactivate" })
            ),
            "{e:?}"
        );
        assert_eq!(
            events(store),
            before,
            "a refused command wrote an audit event"
        );
        let ada = store.read(|conn| users::find(conn, a)).unwrap().unwrap();
        assert!(ada.active);

        // Deleting needs a deactivated user: Ada is active.
        let delete = Lifecycle {
            user: UserRef::Id(a),
            etag: String::new(),
            step: Step::Delete,
        };
        let e = run(store, &snap, &actor(b, "bob"), delete).unwrap_err();
        assert!(
            matches!(e, Error::Refused(Refusal::NotDeactivated)),
            "{e:?}"
        );
        assert_eq!(events(store), before);
    });
}

#[test]
fn sign_ins_started_from_one_address_are_limited_and_answers_taken_once() {
    use fluxgate_core::sso::{Begin, STARTS_PER_CLIENT, TakePending};
    on_both_backends(|store| {
        let snap = Snapshot::compile(&Facts::default(), 0);
        let who = actor(UserId::generate(), "nobody");
        let begin = |state: String, client: &str| Begin {
            provider: "corp".into(),
            state,
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            client_challenge: "c".into(),
            return_to: None,
            client: client.into(),
        };
        for i in 0..STARTS_PER_CLIENT {
            run(store, &snap, &who, begin(format!("s{i}"), "10.0.0.1")).unwrap();
        }
        let over = run(store, &snap, &who, begin("over".into(), "10.0.0.1"));
        assert!(
            matches!(over, Err(Error::Refused(Refusal::TooManySignIns))),
            "{over:?}"
        );
        // Another address is not held back.
        run(store, &snap, &who, begin("other".into(), "10.0.0.2")).unwrap();
        // An answer is taken once, and only at the provider the sign-in went to.
        let take = |provider: &str, state: &str| TakePending {
            provider: provider.into(),
            state: state.into(),
        };
        let mixed = run(store, &snap, &who, take("evil", "s1"))
            .unwrap()
            .unwrap_err();
        assert!(mixed.why.contains("came back to provider"), "{mixed:?}");
        // Used up all the same: the hijacked answer cannot be finished at the right address.
        let again = run(store, &snap, &who, take("corp", "s1"))
            .unwrap()
            .unwrap_err();
        assert!(again.why.contains("already used"), "{again:?}");
        let p = run(store, &snap, &who, take("corp", "s2"))
            .unwrap()
            .unwrap();
        assert_eq!((p.provider.as_str(), p.nonce.as_str()), ("corp", "n"));
        assert!(
            run(store, &snap, &who, take("corp", "s2"))
                .unwrap()
                .is_err()
        );
    });
}
