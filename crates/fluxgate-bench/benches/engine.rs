//! The engine beside cedar-policy and casbin on the reference model (20 portfolios × 10
//! applications × 5 environments, 100 groups, 10,000 users in 1–4 groups each), after checking
//! that all three agree on every sampled decision.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fluxgate_authz::Snapshot;
use fluxgate_bench::model::{Model, Sizes};
use fluxgate_bench::peers::{Casbin, Cedar};
use fluxgate_domain::{Permission, PrincipalId};

/// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, as a
/// smoke test, where a small model keeps it quick (the agreement test covers correctness).
fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn engines(c: &mut Criterion) {
    let (sizes, n) = if benchmarking() {
        (Sizes::REFERENCE, 10_000)
    } else {
        (
            Sizes {
                users: 200,
                ..Sizes::REFERENCE
            },
            50,
        )
    };
    let m = Model::generate(sizes, 42);
    let snap = Snapshot::compile(&m.facts, 1);
    let cedar = Cedar::new(&m).expect("cedar model");
    let casbin = Casbin::new(&m).expect("casbin model");
    let reqs = m.requests(n, 43);
    let mut allowed = 0;
    for r in &reqs {
        let ours = snap
            .check(&r.user, r.permission, Model::resource(r))
            .allowed;
        assert_eq!(ours, cedar.check(r), "cedar disagrees on {r:?}");
        assert_eq!(ours, casbin.check(r), "casbin disagrees on {r:?}");
        allowed += usize::from(ours);
    }
    eprintln!(
        "agreement: all three engines agree on {} decisions ({allowed} allowed)",
        reqs.len()
    );

    let mut g = c.benchmark_group("check");
    let mut i = 0;
    g.bench_function("fluxgate", |b| {
        b.iter(|| {
            let r = &reqs[i % reqs.len()];
            i += 1;
            black_box(snap.check(&r.user, r.permission, Model::resource(r)))
        })
    });
    let mut i = 0;
    g.bench_function("cedar-policy", |b| {
        b.iter(|| {
            let r = &reqs[i % reqs.len()];
            i += 1;
            black_box(cedar.check(r))
        })
    });
    let prepared: Vec<[String; 5]> = reqs.iter().filter_map(|r| casbin.prepare(r)).collect();
    let mut i = 0;
    g.sample_size(20);
    g.bench_function("casbin", |b| {
        b.iter(|| {
            let q = &prepared[i % prepared.len()];
            i += 1;
            black_box(casbin.check_prepared(q))
        })
    });
    g.finish();

    // A batch of 100 checks. The peers have no batch call: they answer 100 checks in turn.
    let mut g = c.benchmark_group("batch_check_100");
    let batch: Vec<_> = reqs
        .iter()
        .take(100)
        .map(|r| (r.user, r.permission, Model::resource(r)))
        .collect();
    g.bench_function("fluxgate", |b| {
        b.iter(|| black_box(snap.check_batch(&batch)))
    });
    g.bench_function("cedar-policy", |b| {
        b.iter(|| black_box(reqs.iter().take(100).filter(|r| cedar.check(r)).count()))
    });
    g.sample_size(10);
    g.bench_function("casbin", |b| {
        b.iter(|| {
            black_box(
                prepared
                    .iter()
                    .take(100)
                    .filter(|q| casbin.check_prepared(q))
                    .count(),
            )
        })
    });
    g.finish();

    // Look-up: the environments of an application where a user may change values. The peers
    // have no look-up call: they check each environment of the application.
    let mut g = c.benchmark_group("environments_allowed");
    let (user, app) = (reqs[0].user, reqs[0].env.app);
    let candidates: Vec<_> = m
        .envs
        .iter()
        .filter(|e| e.app == app)
        .map(|e| fluxgate_bench::model::Req {
            user,
            permission: Permission::ChangeValue,
            env: *e,
        })
        .collect();
    let candidates_casbin: Vec<[String; 5]> = candidates
        .iter()
        .filter_map(|r| casbin.prepare(r))
        .collect();
    g.bench_function("fluxgate", |b| {
        b.iter(|| black_box(snap.environments_allowed(&user, Permission::ChangeValue, app)))
    });
    g.bench_function("cedar-policy", |b| {
        b.iter(|| black_box(candidates.iter().filter(|r| cedar.check(r)).count()))
    });
    g.sample_size(10);
    g.bench_function("casbin", |b| {
        b.iter(|| {
            black_box(
                candidates_casbin
                    .iter()
                    .filter(|q| casbin.check_prepared(q))
                    .count(),
            )
        })
    });
    g.finish();

    // Reverse look-up: who (of 10,000 users) may change values in an environment. Casbin would
    // need 10,000 of its checks per look-up (over ten seconds), so only cedar-policy runs it.
    let mut g = c.benchmark_group("principals_allowed_10k");
    let env = Model::resource(&reqs[0]);
    g.bench_function("fluxgate", |b| {
        b.iter(|| {
            black_box(snap.principals_allowed(
                Permission::ChangeValue,
                env,
                fluxgate_domain::Role::Approver,
            ))
        })
    });
    let everyone: Vec<_> = m
        .facts
        .principals
        .keys()
        .map(|p| fluxgate_bench::model::Req {
            user: *p,
            permission: Permission::ChangeValue,
            env: reqs[0].env,
        })
        .collect();
    g.sample_size(10);
    g.bench_function("cedar-policy", |b| {
        b.iter(|| black_box(everyone.iter().filter(|r| cedar.check(r)).count()))
    });
    g.finish();

    let mut g = c.benchmark_group("fluxgate");
    g.bench_function("compile_snapshot", |b| {
        b.iter(|| black_box(Snapshot::compile(&m.facts, 1)))
    });
    g.finish();

    // A membership change applied to the snapshot, at 1,000 principals (100 groups) and at
    // 100,000 (10,000 groups): the cost must follow the change, not the directory.
    let mut g = c.benchmark_group("update_snapshot");
    for users in [1_000, 100_000] {
        let scale = if benchmarking() { users } else { users / 100 };
        let sizes = Sizes {
            portfolios: (scale / 50).max(1),
            apps_per_portfolio: 2,
            envs_per_app: 3,
            groups_per_portfolio: 5,
            users: scale,
        };
        let mut m = Model::generate(sizes, 44);
        let mut snap = Snapshot::compile(&m.facts, 1);
        let principals: Vec<PrincipalId> = m.facts.principals.keys().copied().collect();
        let group = *m.facts.groups.keys().next().expect("a group");
        let mut i = 0;
        g.bench_function(format!("membership_{users}"), |b| {
            b.iter(|| {
                // Each principal in turn joins the group, then leaves it.
                let p = principals[(i / 2) % principals.len()];
                i += 1;
                let members = &mut m.facts.groups.get_mut(&group).expect("the group").members;
                if !members.remove(&p) {
                    members.insert(p);
                }
                snap = snap.update(&m.facts, &[], &[group], i as i64);
                black_box(snap.revision())
            })
        });
        g.bench_function(format!("compile_{users}"), |b| {
            b.iter(|| black_box(Snapshot::compile(&m.facts, 2)))
        });
    }
    g.finish();
}

criterion_group!(benches, engines);
criterion_main!(benches);
