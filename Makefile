# Everyday entry points. Cargo honours CARGO_TARGET_DIR etc. from the environment.
CARGO ?= cargo

.PHONY: demo test bench lint deps

## demo: run the gateway against its built-in development provider and simulated store
demo:
	$(CARGO) run --release -- demo

## deps: install missing Debian packages and the test OpenID provider's npm modules
deps:
	scripts/test-deps.sh

## test: every test; the install step (deps) is the only one that downloads
test: deps
	$(CARGO) test --all-targets

## bench: policy evaluation (benches/policy.rs), then the load test
# TODO(bench): the storegate-bench binary is being written separately; this target only runs it.
bench:
	$(CARGO) bench --bench policy
	$(CARGO) run --release --bin storegate-bench

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
