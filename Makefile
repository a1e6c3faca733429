# Conduit — the two commands:
#   make dev    run the whole system locally (moto, provider sandbox, dev host)
#   make test   run every check and test (what CI runs)
#
# Everything the tests need is installed by this file: a project-local Python
# virtualenv (.venv: moto, cfn-lint, aws-sam-cli, cargo-lambda, checkov) and the
# aarch64 Rust target for `sam build`.

SHELL := /bin/bash
export CARGO_TERM_COLOR ?= never
export CONDUIT_VENV := $(CURDIR)/.venv
export SAM_CLI_TELEMETRY := 0
# A clean CI clone builds everything once: incremental state would only cost time and
# about 4 GB of disk (target/debug/incremental) there.
ifeq ($(CI),true)
export CARGO_INCREMENTAL ?= 0
endif
CARGO ?= cargo
FUNCTION_CRATES := credentials oauth-start oauth-callback token-refresh records sync-config sync-runs sync-worker integrations event-dispatch google webhooks

.PHONY: dev test beside bench venv fmt lint unit fuzz infra infra-fast token invoke sandbox clean help

help:
	@echo "make dev      start moto, the provider sandbox and the dev host (prints URL, tokens, curl)"
	@echo "make test     fmt + clippy + unit and scenario tests + API fuzzing + template checks + sam build"
	@echo "make fuzz     schemathesis against a fresh dev host from infra/openapi.yaml (SEED=11 EXAMPLES=20)"
	@echo "make token TENANT=demo USER_ID=dev-admin ROLE=admin   mint a token for the running dev host"
	@echo "make invoke FN=credentials EVENT=events/credentials/list-connections.json   run a function once"
	@echo "make sandbox  run the provider sandbox alone on :9100"
	@echo "make bench    benchmarks on the local stack (cold start, OAuth flow, refresh sweep, record sync 1k/10k/100k both ways, conflict detection, event dispatch 10k events × 3 steps)"

venv:
	@bash infra/venv.sh

dev: venv
	$(CARGO) run --quiet -p devhost -- up $(if $(SCHEDULE_EVERY),--schedule-every $(SCHEDULE_EVERY))

# The scenario suite waits on queues, schedules and the sandbox more than it computes:
# beside it, at the lowest CPU priority (nice 19: they take the cycles it leaves idle
# and give them back when it wants them), the template checks (mostly the arm64 build,
# in a target directory of its own so neither waits on the other's build lock) and
# then the fuzzer (a Python process and a local stack of its own). One after the
# other, the three took 30 min on two cores.
test: venv fmt lint
	@$(MAKE) --no-print-directory -j2 --output-sync=target unit beside
	@echo "make test: all checks passed"

beside: venv
	@CARGO_TARGET_DIR=$(CURDIR)/target/arm64 nice -n 19 $(MAKE) --no-print-directory infra
	@nice -n 19 $(MAKE) --no-print-directory fuzz

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings

# The scenario suite waits on queues, schedules and the sandbox more than it computes:
# three test threads keep the two cores busy (TEST_THREADS to change it). One cargo
# invocation, so the workspace's dependencies build once with one feature set.
# Doc tests only where there are any (devhost's example, compiled, not run): rustdoc's
# pass over every other crate to find none took two minutes.
unit: venv
	$(CARGO) test --workspace --lib --bins --tests --quiet -- --test-threads $(or $(TEST_THREADS),3)
	$(CARGO) test -p devhost --doc --quiet

# schemathesis against a fresh local stack (its own moto, sandbox and dev host on free
# ports), from infra/openapi.yaml; deterministic for a given SEED and EXAMPLES.
fuzz: venv
	$(CARGO) run --quiet -p scenarios --bin fuzz -- --seed $(or $(SEED),11) --max-examples $(or $(EXAMPLES),20)

# Benchmarks print figures and their ratio to the goals (README: Performance).
# BENCH_ARGS e.g. "--only sync,conflict --sync 1000,10000 --directions pull" or "--flows 500 --connections 20000".
# The cold-start bench starts the function binaries and the hello-world baseline built
# beside it, with its profile; they are built on their own (not with the bench's
# dependencies), so their features are the functions' own.
bench: venv
	$(CARGO) build --quiet --profile bench-local -p hello $(addprefix -p ,$(FUNCTION_CRATES))
	$(CARGO) run --quiet --profile bench-local -p bench -- $(BENCH_ARGS)

infra: venv
	bash infra/check.sh

# Template checks without the slow arm64 build.
infra-fast: venv
	CHECK_SKIP_BUILD=1 bash infra/check.sh

token:
	@$(CARGO) run --quiet -p devhost -- token --tenant $(or $(TENANT),demo) --user $(or $(USER_ID),dev-admin) --role $(or $(ROLE),admin)

invoke: venv
	$(CARGO) run --quiet -p devhost -- invoke $(FN) $(EVENT)

sandbox:
	$(CARGO) run --quiet -p sandbox -- --port 9100

clean:
	rm -rf .aws-sam .local
