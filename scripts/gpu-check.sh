#!/usr/bin/env bash
# Every device measurement in one call, sized for one session's device time (see the README's
# "Measuring on a GPU").
#
# Prepare here:  scripts/gpu-prepare.sh
# Run there:     bash scripts/gpu-check.sh [SECONDS] [all|experiments]   (carrying .gl, .bin and
#                .data; default budget 540 s, which leaves a 600 s command limit some slack;
#                `experiments` skips the benches, for a second call on the still-warm machine)
#
# Order of priority: the CNN experiment (three seeds side by side, resuming from results/; about
# 200 s are left for the rest), then the throughput benchmark (a relaxation step's floor on
# near-empty models, the cooperative relaxation kernel against the tiled one over every tile
# shape, the tiled sweep again with the register loops rolled to measure the unrolling, the CNN
# per kernel), one timed epoch with each kernel and the
# gradient check; last, the residual example's experiment with the time that is left. Each step
# has its own timeout, and the log marks the seconds used.
# What comes back in $OUT (at most 8 files):
#   log.txt       everything printed
#   bench.jsonl   one JSON object per batch size, relaxation kernel, forced tile shape and
#                 unrolling (field "unrolled")
#   runs.tgz      the experiments' run directories without checkpoints (results.md, metrics.csv,
#                 state.json, config.toml, plots), to unpack into results/
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
bin=./.bin/arelax
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

# The CNN grid: a group of three seeds took about 170 s (H100, 2026-11-27, before the
# one-workgroup-per-weight conv_grad), and one that starts just before the time limit runs to its
# end, so the limit leaves about a group's time before the benches' share.
# The benches' share is about 200 s; the residual experiment (about 20 s per condition and data
# set on a GPU, an estimate) gets what is left after them, or 100 s in `experiments` mode.
if [ "$mode" = experiments ]; then rest=$(( $(left) - 100 )); else rest=$(( $(left) - 200 )); fi
if [ "$rest" -gt 200 ]; then
    mark "CNN experiment (${rest} s)"
    timeout "$rest" $bin experiment --config experiments/cnn-mnist.toml \
        --time-limit "$(awk "BEGIN { print ($rest - 180) / 60 }")"
fi
tar czf "$out/runs.tgz" --exclude='*.safetensors' runs

residual() {
    local r=$(( $(left) - 10 ))
    if [ "$r" -gt 40 ]; then
        mark "residual MLP experiment (${r} s)"
        timeout "$r" $bin experiment --config experiments/residual-mlp.toml \
            --time-limit "$(awk "BEGIN { print ($r - 30) / 60 }")"
    fi
    tar czf "$out/runs.tgz" --exclude='*.safetensors' runs
}
if [ "$mode" = experiments ]; then
    residual
    mark "done"
    exit 0
fi

mark "bench: the paper's MLP, tiled and cooperative, auto tiles (the table)"
timeout 50 $bin bench --batch-sizes 64,1024,4096 --relax-steps 100 --relax-kernel tiled,cooperative
mark "bench: the floor of one relaxation step (near-empty models at batch 1)"
# 4,4,4 is one 32x32 tile: the tiled kernel's time per step is one dependent dispatch boundary,
# the cooperative kernel's one grid barrier of one workgroup. 4,1536,4,4 has 49 tiles of almost
# no work, the count of the paper's MLP at batch 64, so the cooperative figure is a barrier
# over 49 workgroups. Together they say how much of a step is overhead rather than product.
timeout 15 $bin bench --layers 4,4,4 --batch-sizes 1 --relax-steps 100 --tile 32x32 \
    --relax-kernel tiled,cooperative
timeout 15 $bin bench --layers 4,1536,4,4 --batch-sizes 1 --relax-steps 100 --tile 32x32 \
    --relax-kernel tiled,cooperative
mark "bench: every tile shape, tiled and cooperative (JSON)"
timeout 110 $bin bench --json --batch-sizes 64,1024,4096 --relax-steps 100 \
    --relax-kernel tiled,cooperative --tile 16x16,32x32,64x64,128x64,128x128 > "$out/bench.jsonl"
mark "bench: the same tiled sweep with the register loops left rolled (JSON)"
ARELAX_UNROLL=0 timeout 45 $bin bench --json --batch-sizes 64,1024,4096 --relax-steps 100 \
    --tile 32x32,64x64,128x128 >> "$out/bench.jsonl"
mark "bench: CNN per kernel kind"
timeout 40 $bin bench --model examples/cnn.toml --batch-sizes 64,1024 --relax-steps 100 --kernel-times
mark "one epoch of the paper's default run, tiled and cooperative"
timeout 30 $bin train --epochs 1 --out runs/epoch --force
timeout 30 $bin train --epochs 1 --relax-kernel cooperative --out runs/epoch-cooperative --force
mark "gradcheck"
timeout 20 $bin gradcheck --layers 784,300,300,100,10 --batch-size 64 --relax-steps 100 --seed 1 | tail -8
residual
mark "done"
