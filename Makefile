# Everyday entry points. Cargo honours CARGO_TARGET_DIR etc. from the environment.
CARGO ?= cargo

.PHONY: demo test bench lint deps build-deps

## demo: run the gateway against its development provider and simulated store, which only a build
## with the `devkit` feature contains (build-deps first: the SAML verifier needs the xmlsec/libxml2
## headers and libclang to build)
demo: build-deps
	$(CARGO) run --release --features devkit -- demo

## build-deps: install missing Debian packages the build needs (scripts/build-deps.sh)
build-deps:
	scripts/build-deps.sh

## deps: install missing Debian packages (build and test) and the test peers (npm, PyPI)
deps:
	scripts/test-deps.sh

## test: the shape checks (scripts/arch-check.py: no new module cycle, no handler over 60 lines,
## no anyhow outside the CLI and start-up edge),
## then every test; the install step (deps) is the only one that downloads
test: deps
	python3 scripts/arch-check.py
	scripts/check-deploy.sh
	$(CARGO) test --all-targets

## bench: policy evaluation (benches/policy.rs), then launch req/s and p50/p99 (memory sessions,
## Redis sessions on 1 and 2 replicas) against a bare axum 302 via wrk, RSS and the issue-6 targets
## (benches/launch.rs), then a 10,000-user provisioning wave over 3 stores against the simulator
## on a 450-per-30 s window (benches/provisioning.rs), then SAML: full ACS sign-ins/s over HTTP
## (unique signed Responses, 16 connections, memory and Redis sessions) against one core's
## `openssl speed rsa2048` verify rate in the same run, verify-only, and pysaml2 on the same
## Response (benches/saml.rs; needs `make deps`), then audit
## events/s with the hash chain on and off and `audit verify` (benches/audit.rs), then
## forward-auth decisions/s with and without the ES256 identity token (benches/forward_auth.rs),
## then SCIM at 100,000 users and 5,000 groups: filter, big group, leaver check under a write storm,
## reconcile pass, replica start-up from Redis (benches/scim_scale.rs).
## then proxied requests/s through the built-in proxy vs nginx on the same upstream (benches/proxy.rs),
## then a control-panel wave of 500 joiners + 50 leavers at 70 Account API calls/hour on a
## simulated clock: calls vs the minimum, hours to remove the leavers and to finish (benches/control_panel.rs).
## Release build (bench profile). scripts/bench.sh runs them all (BENCHES="a b" for a subset), keeps
## each one's output in target/bench/<name>.log and ends with one summary of every row that has a
## target, the machine and its load.
# Settings: BENCH_SECONDS, BENCH_WARMUP_SECONDS, BENCH_CONNECTIONS, BENCH_THREADS,
# BENCH_LOADGEN=wrk|builtin, BENCH_REDIS_SERVER (see benches/launch.rs); the SAML bench reads
# BENCH_SECONDS (default 5, at most 60) and BENCH_SAML_SIGNINS (sign-ins per ACS row).
bench: deps
	CARGO="$(CARGO)" scripts/bench.sh

## lint: formatting and clippy, warnings are errors; both builds: --all-targets has the `devkit`
## feature (tests and benches turn it on), --lib --bins is the production build without it
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --lib --bins -- -D warnings
