#!/usr/bin/env bash
# Files what one `scripts/gpu-check.sh` call on a device machine returned.
#
# Usage:  scripts/gpu-unpack.sh FILES_AT NAME
#   FILES_AT  the folder the device tool copied $OUT to (log.txt, bench.jsonl, runs.tgz)
#   NAME      the results folder for this session's log and bench, e.g. h100-2026-11-28
#
# The log and the bench JSON go to results/NAME/; the CNN and residual experiments' run
# directories (no checkpoints) replace results/cnn-mnist/ and results/residual-mlp/, from which
# the next session's experiments resume. Then it prints their summary tables, to check before
# committing results/.
set -euo pipefail
from=${1:?usage: scripts/gpu-unpack.sh FILES_AT NAME}
name=${2:?usage: scripts/gpu-unpack.sh FILES_AT NAME}
root=$(git rev-parse --show-toplevel)
mkdir -p "$root/results/$name"
for f in log.txt bench.jsonl; do
    if [ -f "$from/$f" ]; then cp "$from/$f" "$root/results/$name/"; fi
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
# The bench sweep at a glance: AR training-step GPU ms (median) and µs per relaxation step.
if [ -f "$root/results/$name/bench.jsonl" ]; then
    python3 - "$root/results/$name/bench.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'kernel':>11} {'tile':>8} {'loops':>8} {'batch':>6} {'step ms':>9} {'relax us':>9} {'vs tiled':>9}")
for r in rows:
    gpu = (r.get("ar_step_gpu_ms") or r["ar_step_ms"])["median"]
    # Benches before the field existed ran the rolled loops.
    loops = "unrolled" if r.get("unrolled", False) else "rolled"
    diff = r.get("vs_tiled_rel_diff")
    print(f"{r['relax_kernel']:>11} {r['relax_tile']:>8} {loops:>8} {r['batch_size']:>6} "
          f"{gpu:>9.3f} {1e3 * r['relax_step_ms']:>9.1f} {'' if diff is None else f'{diff:.1e}':>9}")
PY
fi
