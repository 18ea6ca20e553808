#!/usr/bin/env bash
# The test command: formatting, lints as errors, then every test in release mode (GPU tests run on
# whatever adapter wgpu picks; CI pins lavapipe with WGPU_ADAPTER_NAME=llvmpipe).
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
# The API docs build without broken links (they map the maths to the code too).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --release --quiet
# One test thread: every GPU test binary shares one device, and graph-kernel results on lavapipe
# were once intermittently wrong when several threads used it at once (see the README's Tests).
cargo test --release -- --test-threads=1
# The kernels once more with wgpu's runtime bounds checks compiled in (the product runs without).
ARELAX_SHADER_CHECKS=1 cargo test --release --test kernels --test graph_kernels -- --test-threads=1
