#!/usr/bin/env bash
# Files what one `scripts/gpu-check.sh` call on a device machine returned.
#
# Usage:  scripts/gpu-unpack.sh FILES_AT NAME
#   FILES_AT  the folder the device tool copied $OUT to (log.txt, bench*.jsonl, runs.tgz)
#   NAME      the results folder for this session's log and bench, e.g. h100-2026-11-28
#
# The log and the bench JSON go to results/NAME/; the CNN and residual experiments' run
# directories (no checkpoints) replace results/cnn-mnist/ and results/residual-mlp/, from which
# the next session's experiments resume. Then it prints their summary tables and the bench's
# (`arelax bench --from`), and draws the bench's figure (results/NAME/bench.png), to check before
# committing results/.
set -euo pipefail
from=${1:?usage: scripts/gpu-unpack.sh FILES_AT NAME}
name=${2:?usage: scripts/gpu-unpack.sh FILES_AT NAME}
root=$(git rev-parse --show-toplevel)
mkdir -p "$root/results/$name"
for f in "$from"/log.txt "$from"/bench*.jsonl; do
    if [ -f "$f" ]; then cp "$f" "$root/results/$name/"; fi
done
if [ -f "$from/runs.tgz" ]; then
    tmp=$(mktemp -d)
    tar xzf "$from/runs.tgz" -C "$tmp"
    for e in cnn-mnist residual-mlp; do
        if [ -d "$tmp/runs/$e" ]; then
            rm -rf "$root/results/$e"
            cp -r "$tmp/runs/$e" "$root/results/"
        fi
    done
    rm -rf "$tmp"
fi
ls -l "$root/results/$name"
for e in cnn-mnist residual-mlp; do
    if [ -f "$root/results/$e/results.md" ]; then cat "$root/results/$e/results.md"; fi
done
# The bench sweep at a glance (every configuration's table rows), and its figure beside the JSON.
for f in "$root/results/$name"/bench*.jsonl; do
    [ -f "$f" ] || continue
    b=$(basename "$f" .jsonl)
    (cd "$root" && cargo run --release --quiet -- bench --from "results/$name/$b.jsonl" \
        --plot "results/$name/$b.png")
done
