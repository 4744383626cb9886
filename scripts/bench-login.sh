#!/usr/bin/env bash
# Starts a release server on a temporary SQLite database (OWASP Argon2id parameters), measures
# Login against the raw verify rate, and stops the server. Used by `make bench-login`.
set -euo pipefail
target="${CARGO_TARGET_DIR:-target}/release"
dir="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
pw="Bench-password-1"
FLUXGATE_DATABASE_URL="sqlite://$dir/bench.db" FLUXGATE_LISTEN=127.0.0.1:0 \
  FLUXGATE_BOOTSTRAP_PASSWORD="$pw" FLUXGATE_LOG=warn \
  "$target/fluxgate" serve >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 1 100); do
  addr="$(sed -n 's/^FluxGate listening on //p' "$dir/out")"
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$dir/err"; exit 1; }
"$target/examples/login_bench" --addr "$addr" --username admin --password "$pw" \
  --requests "${REQUESTS:-200}" --concurrency "${CONCURRENCY:-1,2,4}"
