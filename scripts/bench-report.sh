#!/usr/bin/env bash
# Runs every benchmark and writes the report, docs/benchmarks.md: the machine, the versions and
# each figure. Used by `make bench`. Needs PostgreSQL on 127.0.0.1:5432 for the database parts.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
report="${REPORT:-docs/benchmarks.md}"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT

cargo build --release -p fluxgate-server --bin fluxgate --example login_bench
cargo build --release -p fluxgate-bench --bins

section() { printf '\n%s\n\n' "$1" >>"$tmp"; }
run() { # run a benchmark binary; its Markdown goes into the report, its progress to the terminal
  echo ">> $*" >&2
  "$@" 2>/dev/null | tee -a "$tmp"
}

{
  echo "# FluxGate benchmarks"
  echo
  echo "Written by \`make bench\` on $(date -u '+%Y-%m-%d %H:%M UTC'). Client and servers share the"
  echo "machine, so the ratios against a baseline measured in the same run are the headline"
  echo "figures; absolute times vary from machine to machine."
  echo
  echo "## Machine and versions"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| CPU | $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), $(nproc) core(s) |"
  echo "| memory | $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) |"
  echo "| OS | $(uname -sr) |"
  echo "| rustc | $(rustc --version) |"
  echo "| FluxGate | $(git describe --always --dirty 2>/dev/null || echo unknown) |"
  echo "| PostgreSQL | $(psql -h 127.0.0.1 -U postgres -d test -Atc 'show server_version' 2>/dev/null || echo unreachable) |"
  echo "| SQLite | bundled by libsqlite3-sys $(cargo tree -p fluxgate-store -e normal --prefix none 2>/dev/null | sed -n 's/^libsqlite3-sys v\([0-9.]*\).*/\1/p' | head -n1) |"
  echo "| Argon2id | m=19456 KiB, t=2, p=1 (OWASP) |"
} >"$tmp"

section "## The engine beside cedar-policy and casbin (criterion, median per call)"
echo ">> cargo bench --bench engine" >&2
{
  echo '```'
  cargo bench -p fluxgate-bench --bench engine 2>&1 | grep -E '^[a-z_0-9]+/[a-z_0-9-]+|time:|agreement' || true
  echo '```'
} >>"$tmp"

section "## CheckPermission over gRPC against a bare tonic echo service"
echo "Target: at least 0.90 of the echo's throughput, and p99 at most 1.3x the echo's, at each level. Each server is its own process; FluxGate logs at its default level." >>"$tmp"
echo >>"$tmp"
run "$target/load" --rounds 10

section "## Logins"
echo "Target: Login throughput at least 85% of the raw Argon2id verify rate of the same parameters." >>"$tmp"
echo >>"$tmp"
echo ">> bench-login" >&2
./scripts/bench-login.sh 2>/dev/null | sed 's/^# \(.*\)/\1\n/' | tee -a "$tmp"
echo >>"$tmp"
run "$target/isolation"
echo >>"$tmp"
run "$target/login_timing"

section "## Scale: 100,000 users, 10,000 groups, 1,000,000 audit events, against 1% of that"
for backend in sqlite postgres; do
  run "$target/scale" --backend "$backend"
  echo >>"$tmp"
done

section "## The audit trail at 10,000 and 1,000,000 events (store level)"
run "$target/audit_scale" --backend sqlite
echo >>"$tmp"
run "$target/audit_scale" --backend postgres

section "## Replicas"
run "$target/replicas"

section "## Watch streams"
run "$target/watchers"

section "## The web console (budgets: 200 KB first load, sign-in interactive under 1 s)"
echo ">> bench-console" >&2
"${VENV:-.venv}/bin/python" scripts/bench-console.py "$target/fluxgate" | tee -a "$tmp"

section "## SCIM provisioning (10,000 users and 500 groups through /scim/v2)"
echo ">> bench-scim" >&2
"${VENV:-.venv}/bin/python" scripts/bench-scim.py "$target/fluxgate" | tee -a "$tmp"
echo >>"$tmp"
"${VENV:-.venv}/bin/python" scripts/bench-scim.py "$target/fluxgate" --database-url "${FLUXGATE_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}" | tee -a "$tmp"

section "## Events out: webhook and audit-stream deliveries"
run "$target/webhooks" --backend sqlite
run "$target/webhooks" --backend postgres

mkdir -p "$(dirname "$report")"
mv "$tmp" "$report"
trap - EXIT
echo "wrote $report" >&2
