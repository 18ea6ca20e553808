#!/usr/bin/env bash
# Every device measurement in one call, sized for one session's device time (see the README's
# "Measuring on a GPU").
#
# Prepare here:  scripts/gpu-prepare.sh
# Run there:     bash scripts/gpu-check.sh [SECONDS] [all|experiments|tiles|throughput]
#                (carrying .gl, .bin and .data; default budget 540 s, which leaves a 600 s
#                command limit some slack; `experiments` skips most benches, for a second call;
#                `tiles` sweeps the named tile shapes against full specs only; `throughput`
#                benches the paper's MLP with bench's defaults (tiled and resident), times an
#                epoch tiled, resident and auto, sweeps the resident shapes of
#                scripts/resident-shapes.txt, the weight gradients' K chunks and the update in
#                their dispatch, and times an epoch with the resident shape fastest at batch 64;
#                no experiment: about 4 minutes)
#
# Order: the short benches first (the paper's MLP with the tiled and the cooperative kernel at
# the automatic tile, a relaxation step's floor, the CNN per kernel kind, one timed epoch with
# each kernel), then the CNN experiment (three seeds side by side, resuming from results/) under
# `--end-by`, which starts a condition only if the longest so far would still end in time; with
# the time left, the tile sweep (every tile shape, tiled and cooperative, and the tiled sweep with
# the register loops rolled) and the residual example's experiment. `experiments` mode (a second
# call, on the still-warm machine or a fresh one) benches the paper's MLP at the automatic tiles,
# times one epoch, continues both experiments, then sweeps. Each step has its own
# timeout, and the log marks the seconds used.
# What comes back in $OUT (at most 8 files):
#   log.txt           everything printed
#   bench.jsonl       the paper's MLP at batch 64, 1024 and 4096 at the automatic tile shape,
#                     tiled and cooperative: one JSON object per configuration
#   bench-tiles.jsonl the tile sweep (field "tile"; field "unrolled" false for rolled loops)
#   bench-resident.jsonl  the resident kernel's shapes (rows and threads per workgroup)
#   bench-grad.jsonl  the weight gradients split into K chunks, and the update fused into
#                     their dispatch (throughput mode)
#   bench-wait.jsonl  the resident kernel with waits that poll before blocking (throughput mode)
#   bench-tune.jsonl  the resident kernel with its shape tuned per batch size (throughput mode)
#   runs.tgz          the experiments' run directories without checkpoints (results.md,
#                     metrics.csv, state.json, config.toml, plots), to unpack into results/
set -uo pipefail
budget=${1:-540}
mode=${2:-all}
out="${OUT:-gpu-out}"
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
start=$SECONDS
left() { echo $((budget - (SECONDS - start))); }

# NO_GL=1 skips the loader setup (a dry run on this machine).
if [ -z "${NO_GL:-}" ]; then source .gl/setup.sh; fi
bin=${ARELAX_BIN:-./.bin/arelax}
# The device image has no system font; matplotlib's copy of DejaVu Sans draws the plots.
for f in /opt/torch/.venv/lib/python3*/site-packages/matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf; do
    if [ -z "${ARELAX_FONT:-}" ] && [ -f "$f" ]; then export ARELAX_FONT="$f"; fi
done
# Fashion-MNIST's default location (the experiment files name it).
if [ -d .data/fashion-mnist ]; then
    mkdir -p /usr/share/datasets && cp -r .data/fashion-mnist /usr/share/datasets/
fi
mkdir -p runs
for e in cnn-mnist residual-mlp; do
    if [ -d "results/$e" ]; then cp -r "results/$e" runs/; fi
done

$bin info
mark() { echo "[$((SECONDS - start)) s] $*"; }
pack() { tar czf "$out/runs.tgz" --exclude='*.safetensors' runs; }

# An experiment with the time left less $2 seconds: no condition starts that the longest so far
# says would end after that.
experiment() {
    local r=$(( $(left) - $2 ))
    if [ "$r" -gt 60 ]; then
        mark "experiment $1 (${r} s)"
        timeout "$r" $bin experiment --config "experiments/$1.toml" \
            --end-by "$(awk "BEGIN { print ($r - 5) / 60 }")"
        pack
    fi
}
# The paper's MLP with bench's defaults (tiled and resident at their automatic shapes) at four
# batch sizes, within $1 seconds, with GPU time per kernel (each forward layer on its own): JSON,
# then its table.
bench_mlp() {
    timeout "$1" $bin bench --json --batch-sizes 64,256,1024,4096 --relax-steps 100 \
        --kernel-times > "$out/bench.jsonl"
    $bin bench --from "$out/bench.jsonl"
}
# Every tile shape, tiled and cooperative, then the tiled sweep with rolled loops, if time allows.
sweep() {
    if [ "$(left)" -gt 130 ]; then
        mark "bench: every tile shape, tiled and cooperative (JSON)"
        timeout 110 $bin bench --json --batch-sizes 64,1024,4096 --relax-steps 100 \
            --relax-kernel tiled,cooperative --tile 16x16,32x32,64x64,128x64,128x128 \
            >> "$out/bench-tiles.jsonl"
    fi
    if [ "$(left)" -gt 55 ]; then
        mark "bench: the tiled sweep with the register loops left rolled (JSON)"
        ARELAX_UNROLL=0 timeout 45 $bin bench --json --batch-sizes 64,1024,4096 \
            --relax-steps 100 --tile 32x32,64x64,128x128 >> "$out/bench-tiles.jsonl"
    fi
}

# Tile shapes beyond the named ones (full specs), one per line; tests/kernels.rs reads the same
# file and holds each to the CPU reference.
specs=$(grep -v '^#' scripts/tile-specs.txt | paste -sd, -)
# The ones after its "# 512 threads" comment.
wide_specs=$(awk '/^# 512 threads/ { f = 1; next } f && !/^#/' scripts/tile-specs.txt | paste -sd, -)
if [ "$mode" = tiles ]; then
    mark "bench: the named shapes auto uses against the full specs (JSON)"
    timeout $(( $(left) - 5 )) $bin bench --json --batch-sizes 64,1024,4096 --relax-steps 100 \
        --tile "16x16,32x32,64x64,$specs" >> "$out/bench-tiles.jsonl"
    $bin bench --from "$out/bench-tiles.jsonl"
    mark "done"
    exit 0
fi

if [ "$mode" = throughput ]; then
    mark "bench: the paper's MLP with its defaults (tiled and resident, automatic shapes)"
    bench_mlp 100
    # Waits that poll for up to 20 ms before blocking (not yet measured): the resident kernel at
    # its automatic shapes, against the same rows of bench.jsonl.
    mark "bench: resident, waits polling (ARELAX_WAIT_SPIN_US=20000) (JSON)"
    ARELAX_WAIT_SPIN_US=20000 timeout 40 $bin bench --json --batch-sizes 64,1024,4096 \
        --relax-steps 100 --relax-kernel resident > "$out/bench-wait.jsonl"
    $bin bench --from "$out/bench-wait.jsonl"
    # The SGD step inside the gradients' dispatch (not yet measured; slower on lavapipe), resident
    # at its automatic shapes, against the same rows of bench.jsonl; into bench-grad.jsonl, with
    # the K chunks below.
    mark "bench: resident, the update fused into the gradients' dispatch (JSON)"
    timeout 35 $bin bench --json --batch-sizes 64,1024,4096 --relax-steps 100 \
        --relax-kernel resident --fused-update >> "$out/bench-grad.jsonl"
    # The resident kernel's shape tuned on the device (a few shapes timed per batch size, the
    # fastest measured; not yet run on a GPU).
    mark "bench: resident, shape tuned (JSON)"
    timeout 60 $bin bench --json --batch-sizes 64,256,1024,4096 --relax-steps 100 \
        --relax-kernel resident --resident tune > "$out/bench-tune.jsonl"
    $bin bench --from "$out/bench-tune.jsonl"
    mark "one epoch of the paper's default run: tiled, resident, and auto (timed at the start)"
    timeout 25 $bin train --epochs 1 --out runs/epoch --force
    timeout 25 $bin train --epochs 1 --relax-kernel resident --out runs/epoch-resident --force
    timeout 25 $bin train --epochs 1 --relax-kernel auto --out runs/epoch-auto --force
    timeout 25 $bin train --epochs 1 --relax-kernel auto --resident-shape tune \
        --out runs/epoch-tune --force
    # The resident kernel's shapes, a line of scripts/resident-shapes.txt per call.
    grep -v '^#' scripts/resident-shapes.txt | while read -r batches shapes; do
        [ -n "$batches" ] || continue
        mark "bench: resident shapes $shapes at $batches (JSON)"
        timeout $(( $(left) - 60 )) $bin bench --json --batch-sizes "$batches" \
            --relax-steps 100 --relax-kernel resident --resident "$shapes" \
            >> "$out/bench-resident.jsonl"
    done
    $bin bench --from "$out/bench-resident.jsonl"
    # The weight gradients split into K chunks (not yet measured), resident at its automatic
    # shapes.
    mark "bench: weight gradients in 1, 2, 4 and 8 K chunks at 1024 and 4096 (JSON)"
    timeout $(( $(left) - 50 )) $bin bench --json --batch-sizes 1024,4096 --relax-steps 100 \
        --relax-kernel resident --grad-split 1,2,4,8 >> "$out/bench-grad.jsonl"
    $bin bench --from "$out/bench-grad.jsonl"
    # The epoch (batch 64) again with the shape that relaxed fastest at batch 64 in the sweep.
    best=$(python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r["batch_size"] == 64 and r.get("resident_shape")]
print(min(rows, key=lambda r: r["relax_step_ms"])["resident_shape"] if rows else "")
' "$out/bench-resident.jsonl" 2>/dev/null)
    if [ -n "$best" ] && [ "$(left)" -gt 20 ]; then
        mark "one epoch of the paper's default run, resident $best"
        timeout 25 $bin train --epochs 1 --relax-kernel resident --resident-shape "$best" \
            --out runs/epoch-resident-best --force
    fi
    mark "done"
    exit 0
fi

if [ "$mode" = experiments ]; then
    mark "bench: the paper's MLP with its defaults (tiled and resident, automatic shapes)"
    bench_mlp 100
    mark "one epoch of the paper's default run"
    timeout 25 $bin train --epochs 1 --out runs/epoch --force
    experiment cnn-mnist 10
    experiment residual-mlp 10
    sweep
    mark "done"
    exit 0
fi

mark "bench: the paper's MLP, tiled and cooperative, automatic tiles (JSON, then its table)"
timeout 60 $bin bench --json --batch-sizes 64,1024,4096 --relax-steps 100 \
    --relax-kernel tiled,cooperative > "$out/bench.jsonl"
$bin bench --from "$out/bench.jsonl"
mark "bench: the floor of one relaxation step (near-empty models at batch 1)"
# 4,4,4 is one 32x32 tile: the tiled kernel's time per step is one dependent dispatch boundary,
# the cooperative kernel's one grid barrier of one workgroup. 4,1536,4,4 has 49 tiles of almost
# no work, the count of the paper's MLP at batch 64, so the cooperative figure is a barrier
# over 49 workgroups. Together they say how much of a step is overhead rather than product.
timeout 15 $bin bench --layers 4,4,4 --batch-sizes 1 --relax-steps 100 --tile 32x32 \
    --relax-kernel tiled,cooperative
timeout 15 $bin bench --layers 4,1536,4,4 --batch-sizes 1 --relax-steps 100 --tile 32x32 \
    --relax-kernel tiled,cooperative
mark "bench: CNN per kernel kind"
timeout 25 $bin bench --model examples/cnn.toml --batch-sizes 64 --relax-steps 100 --kernel-times
mark "one epoch of the paper's default run, tiled and cooperative"
timeout 25 $bin train --epochs 1 --out runs/epoch --force
timeout 25 $bin train --epochs 1 --relax-kernel cooperative --out runs/epoch-cooperative --force
experiment cnn-mnist 10
sweep
experiment residual-mlp 10
mark "done"
