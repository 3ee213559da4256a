#!/usr/bin/env bash
# Benchmark smoke run: proves every benchmark still builds and runs, in a few seconds, in the
# debug profile (the numbers it prints mean nothing). Criterion runs each benchmark once under
# `cargo test --bench`; the end-to-end bench runs with a tiny data set (`--quick`).
# Real measurements: see BENCHMARKS.md (`cargo bench`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --bench pipeline
cargo test --locked --bench e2e -- --quick
