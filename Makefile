# FluxGate: thin wrappers over cargo and buf. `make help` lists the targets.

CARGO ?= cargo
BUF ?= npx --yes @bufbuild/buf@1.75.0
# Where `make run` keeps its SQLite database.
DATA_DIR ?= .fluxgate
# Python for the end-to-end tests (aiosmtpd, a real SMTP server), set up by the first `make test`.
VENV ?= .venv
PY_STAMP := $(VENV)/.installed
TEST_ENV = FLUXGATE_TEST_PYTHON=$(abspath $(VENV))/bin/python

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-15s %s\n", $$1, $$2}'

.PHONY: run
run: ## Build and serve on 127.0.0.1:50051 with an embedded SQLite database in .fluxgate/
	@mkdir -p $(DATA_DIR)
	FLUXGATE_DATABASE_URL=$${FLUXGATE_DATABASE_URL:-sqlite://$(DATA_DIR)/fluxgate.db} \
		$(CARGO) run --release -p fluxgate-server --bin fluxgate -- serve

.PHONY: test
test: $(PY_STAMP) ## Run every test; PostgreSQL (and SMTP) tests are skipped, loudly, when unavailable
	$(TEST_ENV) $(CARGO) test --workspace --all-targets

.PHONY: test-postgres
test-postgres: $(PY_STAMP) ## Run every test and fail if PostgreSQL is unreachable
	$(TEST_ENV) FLUXGATE_TEST_REQUIRE_POSTGRES=1 $(CARGO) test --workspace --all-targets

$(PY_STAMP): tests/support/requirements.txt
	@(python3 -m venv $(VENV) \
	  && $(VENV)/bin/pip install -q --disable-pip-version-check -r tests/support/requirements.txt \
	  && touch $@) \
	|| echo "WARNING: could not set up $(VENV) (python3 -m venv; pip install -r tests/support/requirements.txt): the SMTP tests will be skipped" >&2

.PHONY: web
web: ## Rebuild the web console (web/ -> crates/fluxgate-server/console/, committed); needs Node.js
	cd web && npm ci --no-audit --no-fund && npx buf generate && npx tsc --noEmit -p . && node build.mjs

.PHONY: web-check
web-check: web ## Fail when the committed console differs from what its sources build
	@git diff --exit-code --stat -- crates/fluxgate-server/console web/src/gen \
	  || (echo "the committed console is stale: run 'make web' and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- crates/fluxgate-server/console web/src/gen)" \
	  || (git status --porcelain -- crates/fluxgate-server/console web/src/gen; \
	      echo "untracked console files: run 'make web' and commit" >&2; exit 1)

.PHONY: cli-reference
cli-reference: ## Regenerate the README's fluxctl reference from the command definitions
	FLUXCTL_UPDATE_README=1 $(CARGO) test -p fluxctl --bin fluxctl -- readme_cli_reference --exact tests::readme_cli_reference_matches_the_definitions

.PHONY: screenshots
screenshots: $(PY_STAMP) ## Browser tests on SQLite, keeping each page's screenshot in docs/console/
	mkdir -p docs/console
	$(TEST_ENV) FLUXGATE_CONSOLE_SCREENSHOTS=$(abspath docs/console) FLUXGATE_TEST_REQUIRE_BROWSER=1 \
		$(CARGO) test -p fluxgate-e2e --test e2e -- console::sqlite::every_flow_in_a_real_browser --exact

.PHONY: lint
lint: ## cargo fmt --check, clippy -D warnings, buf lint, buf breaking against the released contracts
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(BUF) lint
	$(BUF) breaking --against proto/compat/fluxgate-v1.binpb

.PHONY: proto-baseline
proto-baseline: ## Record the current contracts as released (buf breaking then checks against them)
	$(BUF) build -o proto/compat/fluxgate-v1.binpb

.PHONY: proto
proto: ## Lint the protobuf contracts and regenerate the Rust code
	$(BUF) lint
	$(CARGO) build -p fluxgate-proto

.PHONY: bench
bench: $(PY_STAMP) ## Every benchmark (engine, gRPC vs echo, logins, scale, audit, replicas, console) into docs/benchmarks.md
	VENV=$(VENV) ./scripts/bench-report.sh

.PHONY: bench-console
bench-console: $(PY_STAMP) ## The console's budgets in headless Chromium: first load, sign-in page, users page with 10,000 users
	$(CARGO) build --release -p fluxgate-server --bin fluxgate
	$(VENV)/bin/python scripts/bench-console.py $${CARGO_TARGET_DIR:-target}/release/fluxgate

.PHONY: bench-scim
bench-scim: $(PY_STAMP) ## SCIM provisioning: 10,000 users and 500 groups through /scim/v2, users per second
	$(CARGO) build --release -p fluxgate-server --bin fluxgate
	$(VENV)/bin/python scripts/bench-scim.py $${CARGO_TARGET_DIR:-target}/release/fluxgate

.PHONY: bench-webhooks
bench-webhooks: ## Events out: webhook and audit-stream deliveries per second, commit-to-delivery delay, SQLite and PostgreSQL
	$(CARGO) build --release -p fluxgate-bench --bin webhooks
	$${CARGO_TARGET_DIR:-target}/release/webhooks --backend sqlite
	$${CARGO_TARGET_DIR:-target}/release/webhooks --backend postgres

.PHONY: soak
soak: ## Five minutes of mixed load (checks, logins, writes, approvals) on a release server; fails on any error or memory growth
	$(CARGO) build --release -p fluxgate-server --bin fluxgate -p fluxgate-bench --bin soak
	$${CARGO_TARGET_DIR:-target}/release/soak --seconds $${SOAK_SECONDS:-300}

# cargo-fuzz targets (fuzz/): libFuzzer's coverage instrumentation needs unstable rustc flags,
# which RUSTC_BOOTSTRAP allows on the stable toolchain; no sanitizer (the code forbids unsafe).
FUZZ_TARGETS := request_decode validation page_token bearer_token engine
FUZZ_SECONDS ?= 60
FUZZ_TARGET_DIR ?= $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR)-fuzz,fuzz/target)
# Where new inputs go: the kept corpus by default; CI points it elsewhere to leave the checkout alone.
FUZZ_NEW_INPUTS ?= fuzz/corpus

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZ_SECONDS (default 60) from its kept corpus (installs cargo-fuzz if missing)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(abspath $(FUZZ_NEW_INPUTS))/$$t && \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --sanitizer none --target-dir $(abspath $(FUZZ_TARGET_DIR)) \
	    $$t $(abspath $(FUZZ_NEW_INPUTS))/$$t corpus/$$t \
	    -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

.PHONY: bench-login
bench-login: ## Login latency and throughput against a release server on a temporary database
	$(CARGO) build --release -p fluxgate-server --bin fluxgate --example login_bench
	./scripts/bench-login.sh

.PHONY: clean
clean: ## Remove build output and the local database
	$(CARGO) clean
	rm -rf $(DATA_DIR) $(VENV)
