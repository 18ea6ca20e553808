#!/usr/bin/env bash
# The test command: formatting, lints as errors, then every test in release mode (GPU tests run on
# whatever adapter wgpu picks; CI pins lavapipe with WGPU_ADAPTER_NAME=llvmpipe).
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
