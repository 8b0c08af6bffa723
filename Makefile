# The two commands. Each installs what it needs (idempotently) and says what it is doing.
.PHONY: run test bench

## Build and run the whole stack locally: the four Workers in workerd and the origin.
run:
	@tests/stack/run.sh

## Every test: fmt, clippy (host and wasm32), cargo test, wasm builds, deploy dry-runs, end-to-end.
test:
	@tests/stack/test.sh

## Release builds and every benchmark in tests/bench: figures, targets, ratios to baselines.
bench:
	@tests/stack/bench.sh
