//! The change-request life cycle ([`Life::step`]) against a deliberately naive transition
//! table: the few transitions that are allowed, written out as data; everything else refused.

use fluxgate_domain::{Life, RefusalKind, RequestState, Step, Verdict};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepKind {
    Edit,
    Review,
    Cancel,
    Apply,
    Expire,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Not past its time.
    Open,
    Past,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    State(RequestState),
    /// Pending, or approved when no approval is needed.
    Opening,
    /// The reviewers' tally.
    Tally,
}

use RequestState::*;

/// Every allowed transition. Anything not listed is refused.
const TABLE: &[(RequestState, StepKind, Due, To)] = &[
    (Pending, StepKind::Edit, Due::Open, To::Opening),
    (Pending, StepKind::Review, Due::Open, To::Tally),
    (Pending, StepKind::Cancel, Due::Open, To::State(Cancelled)),
    (Approved, StepKind::Cancel, Due::Any, To::State(Cancelled)),
    (Approved, StepKind::Apply, Due::Any, To::State(Applied)),
    (Pending, StepKind::Expire, Due::Past, To::State(Expired)),
];

fn kind(step: Step) -> StepKind {
    match step {
        Step::Edit { .. } => StepKind::Edit,
        Step::Review { .. } => StepKind::Review,
        Step::Cancel => StepKind::Cancel,
        Step::Apply => StepKind::Apply,
        Step::Expire => StepKind::Expire,
    }
}

fn naive(state: RequestState, past_due: bool, step: Step) -> Option<RequestState> {
    let row = TABLE.iter().find(|(from, k, due, _)| {
        *from == state
            && *k == kind(step)
            && match due {
                Due::Open => !past_due,
                Due::Past => past_due,
                Due::Any => true,
            }
    })?;
    Some(match (row.3, step) {
        (To::State(s), _) => s,
        (To::Opening, Step::Edit { required }) => {
            if required == 0 {
                Approved
            } else {
                Pending
            }
        }
        (
            To::Tally,
            Step::Review {
                verdict,
                approvals,
                required,
            },
        ) => match verdict {
            Verdict::Reject => Rejected,
            Verdict::Override => Approved,
            Verdict::Approve if approvals >= required => Approved,
            Verdict::Approve => Pending,
        },
        _ => unreachable!("table row does not fit its step"),
    })
}

fn any_state() -> impl Strategy<Value = RequestState> {
    prop::sample::select(RequestState::ALL.to_vec())
}

fn any_step() -> impl Strategy<Value = Step> {
    let verdict = prop::sample::select(vec![Verdict::Approve, Verdict::Reject, Verdict::Override]);
    prop_oneof![
        (0u32..4).prop_map(|required| Step::Edit { required }),
        (verdict, 0u32..4, 0u32..4).prop_map(|(verdict, approvals, required)| Step::Review {
            verdict,
            approvals,
            required
        }),
        Just(Step::Cancel),
        Just(Step::Apply),
        Just(Step::Expire),
    ]
}

proptest! {
    #[test]
    fn one_step_matches_the_table(
        state in any_state(),
        expires_at in 0i64..100,
        now in 0i64..100,
        step in any_step(),
    ) {
        let life = Life { state, expires_at, applied_by: Some("serviceAccounts/x") };
        let got = life.step(now, step);
        prop_assert_eq!(got.as_ref().ok().copied(), naive(state, expires_at <= now, step));
        if let Err(r) = got {
            // A lost race with the clock or another writer is never "read again and retry".
            prop_assert_eq!(r.kind(), RefusalKind::Precondition);
        }
    }

    #[test]
    fn final_states_are_never_left(
        required in 0u32..3,
        steps in prop::collection::vec((any_step(), 0i64..20), 0..12),
    ) {
        let mut state = fluxgate_domain::opening_state(required);
        let expires_at = 10;
        for (step, now) in steps {
            let life = Life { state, expires_at, applied_by: None };
            match life.step(now, step) {
                Ok(next) => {
                    prop_assert!(!state.is_final(), "{state} left for {next}");
                    state = next;
                }
                Err(_) => prop_assert_eq!(naive(state, expires_at <= now, step), None),
            }
        }
    }
}

#[test]
fn refusals_read_as_clients_see_them() {
    let applied = Life {
        state: Applied,
        expires_at: 0,
        applied_by: None,
    };
    assert_eq!(
        applied.step(1, Step::Apply).unwrap_err().to_string(),
        "the change request was already applied by an earlier call"
    );
    let pending = Life {
        state: Pending,
        expires_at: 5,
        applied_by: None,
    };
    assert_eq!(
        pending.step(5, Step::Cancel).unwrap_err().to_string(),
        "the change request has expired"
    );
    assert_eq!(
        applied
            .step(1, Step::Edit { required: 1 })
            .unwrap_err()
            .to_string(),
        "the change request is applied; only pending requests are edited"
    );
}
