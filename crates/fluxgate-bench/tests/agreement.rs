//! FluxGate's engine, cedar-policy and casbin agree on every decision of a sample of the model.
#![allow(clippy::unwrap_used)]

use fluxgate_authz::Snapshot;
use fluxgate_bench::model::{Model, Sizes};
use fluxgate_bench::peers::{Casbin, Cedar};

#[test]
fn the_three_engines_agree() {
    let sizes = Sizes {
        users: 1500,
        ..Sizes::REFERENCE
    };
    let m = Model::generate(sizes, 7);
    let snap = Snapshot::compile(&m.facts, 1);
    let cedar = Cedar::new(&m).unwrap();
    let casbin = Casbin::new(&m).unwrap();
    let reqs = m.requests(600, 11);
    let mut allowed = 0;
    for r in &reqs {
        let ours = snap
            .check(&r.user, r.permission, Model::resource(r))
            .allowed;
        assert_eq!(ours, cedar.check(r), "cedar disagrees on {r:?}");
        assert_eq!(ours, casbin.check(r), "casbin disagrees on {r:?}");
        allowed += usize::from(ours);
    }
    // The sample exercises both answers.
    assert!(
        allowed > reqs.len() / 5 && allowed < reqs.len() * 4 / 5,
        "{allowed} of {}",
        reqs.len()
    );
}
