#!/usr/bin/env bash
# A deployment step guarded by FluxGate's four-eyes approval.
#
# The pipeline's service account submits a change request, waits for a reviewer's decision,
# and once approved marks the request applied and applies the change. It needs only fluxctl and
# these variables:
#
#   FLUXGATE_SERVER        server URL (https:// for TLS; FLUXGATE_CA_CERT for a private CA)
#   FLUXGATE_TOKEN         the service account's API key (fgk_...), from the CI secret store
#   FLUXGATE_ENVIRONMENT   the environment: its name (e.g. prod) or its full name
#   FLUXGATE_APPLICATION   optional: the application the environment is in (e.g. web)
#   FLUXGATE_PORTFOLIO     optional: the portfolio the application is in (e.g. Shop)
#   FEATURE_KEY            the feature to change
#   CHANGE_KIND            change-value (default), lock, unlock, retire, create-feature, ...
#   PAYLOAD                JSON object for the flag store (default {"value": true})
#   TITLE                  what reviewers see (default "CI: <kind> <feature>")
#   WAIT_TIMEOUT           how long to wait for a decision (default 30m)
#   APPLY_COMMAND          the command that applies the change; it gets CHANGE_REQUEST
#   CI_PIPELINE_ID         optional; makes a retried job safe: it finds the request the first
#                          run submitted instead of submitting another, and never applies a
#                          request twice
#
# Exit status: 0 applied (or applied already by an earlier run of the job); 10 rejected; 11 cancelled or expired; 12 no decision in time (the
# request is cancelled); any other fluxctl code (3 not found, 4 denied, 5 invalid, 6 cancelled
# before it could be marked applied, 7 unavailable...) as fluxctl returned it; 20 when
# APPLY_COMMAND failed after the request was marked applied.
set -uo pipefail

: "${FLUXGATE_SERVER:?set FLUXGATE_SERVER}"
: "${FLUXGATE_TOKEN:?set FLUXGATE_TOKEN to the API key of the service account}"
: "${FLUXGATE_ENVIRONMENT:?set FLUXGATE_ENVIRONMENT}"
: "${FEATURE_KEY:?set FEATURE_KEY}"
: "${APPLY_COMMAND:?set APPLY_COMMAND}"
export FLUXGATE_SERVER FLUXGATE_TOKEN

CHANGE_KIND="${CHANGE_KIND:-change-value}"
PAYLOAD="${PAYLOAD:-}"
[ -n "$PAYLOAD" ] || PAYLOAD='{"value": true}'
TITLE="${TITLE:-CI: $CHANGE_KIND $FEATURE_KEY}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-30m}"

log() { echo "ci-pipeline: $*" >&2; }

# A retried job with the same pipeline id gets the request submitted the first time.
submit_args=()
if [ -n "${CI_PIPELINE_ID:-}" ]; then
  submit_args+=(--idempotency-key "ci-${CI_PIPELINE_ID}-${FEATURE_KEY}")
fi
scope_args=()
[ -n "${FLUXGATE_PORTFOLIO:-}" ] && scope_args+=(--portfolio "$FLUXGATE_PORTFOLIO")
[ -n "${FLUXGATE_APPLICATION:-}" ] && scope_args+=(--application "$FLUXGATE_APPLICATION")

# This run's own key for marking the request applied: retries within the run are answered as
# the first attempt was, while another run of the job finds the request applied already.
run_id=$(cat /proc/sys/kernel/random/uuid 2>/dev/null || echo "$$-$RANDOM-$(date +%s)")

request=$(fluxctl -o name ${submit_args[@]+"${submit_args[@]}"} change-requests submit \
  ${scope_args[@]+"${scope_args[@]}"} \
  --environment "$FLUXGATE_ENVIRONMENT" \
  --feature "$FEATURE_KEY" \
  --kind "$CHANGE_KIND" \
  --payload "$PAYLOAD" \
  --title "$TITLE")
rc=$?
if [ "$rc" -ne 0 ]; then
  log "submission failed (fluxctl exit $rc)"
  exit "$rc"
fi
log "submitted $request; waiting up to $WAIT_TIMEOUT for a decision"

fluxctl --timeout "$WAIT_TIMEOUT" change-requests wait "$request"
rc=$?
case "$rc" in
  0)
    log "$request approved"
    ;;
  10)
    log "$request was rejected; nothing applied"
    exit 10
    ;;
  11)
    log "$request was cancelled or expired; nothing applied"
    exit 11
    ;;
  12)
    log "no decision on $request within $WAIT_TIMEOUT; cancelling it"
    fluxctl change-requests cancel "$request" --reason "CI gave up waiting after $WAIT_TIMEOUT" >/dev/null
    exit 12
    ;;
  *)
    log "waiting for $request failed (fluxctl exit $rc)"
    exit "$rc"
    ;;
esac

# The state of the request, e.g. CHANGE_REQUEST_STATE_APPLIED.
state_of() {
  fluxctl -o json change-requests get "$1" | grep -o '"state": *"[A-Z_]*"' | head -n 1 | grep -o '[A-Z_]*"$' | tr -d '"'
}

# Mark the request applied first, then apply: marking is what makes this run the one that
# applies. If the request was cancelled after the approval, or an earlier run of the job marked
# it, the mark fails (exit 6) and nothing is applied. While the server is unreachable (exit 7)
# it is retried with this run's idempotency key, so that a retry of a mark that did land is
# answered as the first attempt was.
for attempt in 1 2 3 4 5; do
  fluxctl --idempotency-key "applied-${request##*/}-${run_id}" change-requests mark-applied "$request" >/dev/null
  rc=$?
  [ "$rc" -ne 7 ] && break
  log "server unavailable while marking $request applied (attempt $attempt); retrying"
  sleep $((attempt * 2))
done
if [ "$rc" -eq 6 ] && [ "$(state_of "$request")" = "CHANGE_REQUEST_STATE_APPLIED" ]; then
  log "$request was applied by an earlier run of this job; not applying it again"
  exit 0
fi
if [ "$rc" -ne 0 ]; then
  log "$request could not be marked applied (fluxctl exit $rc); nothing applied"
  exit "$rc"
fi

if ! CHANGE_REQUEST="$request" bash -c "$APPLY_COMMAND"; then
  log "applying $request failed after it was marked applied: re-run the apply step by hand"
  exit 20
fi
log "$request applied"
