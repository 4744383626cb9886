//! The engine beside cedar-policy and casbin on the reference model (20 portfolios × 10
//! applications × 5 environments, 100 groups, 10,000 users in 1–4 groups each), after checking
//! that all three agree on every sampled decision.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fluxgate_authz::Snapshot;
use fluxgate_bench::model::{Model, Sizes};
use fluxgate_bench::peers::{Casbin, Cedar};
use fluxgate_domain::Permission;

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

    let mut g = c.benchmark_group("fluxgate");
    let batch: Vec<_> = reqs
        .iter()
        .take(100)
        .map(|r| (r.user, r.permission, Model::resource(r)))
        .collect();
    g.bench_function("batch_check_100", |b| {
        b.iter(|| black_box(snap.check_batch(&batch)))
    });
    let (user, app) = (reqs[0].user, reqs[0].env.app);
    g.bench_function("environments_allowed", |b| {
        b.iter(|| black_box(snap.environments_allowed(&user, Permission::ChangeValue, app)))
    });
    let env = Model::resource(&reqs[0]);
    g.bench_function("principals_allowed_10k", |b| {
        b.iter(|| {
            black_box(snap.principals_allowed(
                Permission::ChangeValue,
                env,
                fluxgate_domain::Role::Approver,
            ))
        })
    });
    g.bench_function("compile_snapshot", |b| {
        b.iter(|| black_box(Snapshot::compile(&m.facts, 1)))
    });
    g.finish();
}

criterion_group!(benches, engines);
criterion_main!(benches);
