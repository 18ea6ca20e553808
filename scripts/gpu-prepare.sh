#!/usr/bin/env bash
# Prepares this checkout for scripts/gpu-check.sh on a device machine: the release binary (.bin),
# the Vulkan loader (.gl, from ../shared/tools/gpu-prep.sh) and Fashion-MNIST (.data), all
# ignored by git and carried by the device tool: carry [".gl", ".bin", ".data"].
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
cargo build --release
../shared/tools/gpu-prep.sh target/release/arelax
strip .bin/arelax || true
grep -qx '/.data/' .git/info/exclude 2>/dev/null || echo '/.data/' >> .git/info/exclude
mkdir -p .data
cp -r ../shared/data/fashion-mnist .data/
chmod -R u+w .data
du -sh .gl .bin .data
