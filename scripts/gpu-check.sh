#!/usr/bin/env bash
# Every device measurement in one call, sized for one session's device time (see the README's
# "Measuring on a GPU").
#
# Prepare here:  scripts/gpu-prepare.sh
# Run there:     bash scripts/gpu-check.sh [SECONDS]   (carrying .gl, .bin and .data; default
#                budget 540 s, which leaves a 600 s command limit some slack)
#
# Order of priority: the throughput benchmark (a tile-shape sweep, five seeds side by side), the
# gradient check and one timed epoch, then the paper's MLP experiment (its five seeds side by
# side; finished on 2026-11-27, so it only re-summarises) and the CNN experiment (three seeds side
# by side), each with a time limit.
# Experiments resume from results/ (finished runs committed from earlier sessions), so every
# session adds seeds to the same grid. What comes back in $OUT (at most 8 files):
#   log.txt       everything printed
#   bench.jsonl   one JSON object per batch size and forced tile shape
#   runs.tgz      the experiments' run directories without checkpoints (results.md, metrics.csv,
#                 state.json, config.toml, plots), to unpack into results/
set -uo pipefail
budget=${1:-540}
out="${OUT:-gpu-out}"
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
start=$SECONDS
left() { echo $((budget - (SECONDS - start))); }

# NO_GL=1 skips the loader setup (a dry run on this machine).
if [ -z "${NO_GL:-}" ]; then source .gl/setup.sh; fi
bin=./.bin/arelax
# The device image has no system font; matplotlib's copy of DejaVu Sans draws the plots.
if [ -z "${ARELAX_FONT:-}" ]; then
    ARELAX_FONT=$(find / -xdev -name DejaVuSans.ttf -print -quit 2>/dev/null) && export ARELAX_FONT
fi
# Fashion-MNIST's default location (the experiment files name it).
if [ -d .data/fashion-mnist ]; then
    mkdir -p /usr/share/datasets && cp -r .data/fashion-mnist /usr/share/datasets/
fi
mkdir -p runs
for e in paper-mlp cnn-mnist; do
    if [ -d "results/$e" ]; then cp -r "results/$e" runs/; fi
done

$bin info
# (The resident relaxation kernel measured 3-6x slower than the best tiled shape on the H100 at
# every batch size, results/h100-2026-11-27/, so it is left out to save the CNN experiment's time.)
echo "== bench (the table, auto tiles) =="
timeout 120 $bin bench --batch-sizes 64,1024,4096 --relax-steps 100
echo "== bench tile sweep (JSON) =="
timeout 150 $bin bench --json --batch-sizes 64,1024,4096 --relax-steps 100 \
    --tile 16x16,32x32,64x64,128x64,128x128 > "$out/bench.jsonl"
echo "== bench: five seeds side by side (how the paper experiment trains) =="
timeout 40 $bin bench --batch-sizes 64 --relax-steps 100 --replicas 5
timeout 60 $bin bench --model examples/cnn.toml --batch-sizes 64,1024 --relax-steps 100
timeout 40 $bin bench --model examples/cnn.toml --batch-sizes 64 --relax-steps 100 --replicas 3
echo "== gradcheck =="
timeout 30 $bin gradcheck --layers 784,300,300,100,10 --batch-size 64 --relax-steps 100 --seed 1 | tail -8
echo "== one epoch of the paper's default run =="
timeout 60 $bin train --epochs 1 --out runs/epoch --force

# The experiments share what is left, 60/40, minus a minute for a run that starts late.
rest=$(( $(left) - 60 ))
if [ "$rest" -gt 60 ]; then
    mlp=$(( rest * 6 / 10 ))
    echo "== paper MLP experiment (${mlp} s) =="
    timeout $((mlp + 90)) $bin experiment --config experiments/paper-mlp.toml \
        --time-limit "$(awk "BEGIN { print $mlp / 60 }")"
    rest=$(( $(left) - 60 ))
    if [ "$rest" -gt 30 ]; then
        echo "== CNN experiment (${rest} s) =="
        timeout $((rest + 50)) $bin experiment --config experiments/cnn-mnist.toml \
            --time-limit "$(awk "BEGIN { print $rest / 60 }")"
    fi
fi
tar czf "$out/runs.tgz" --exclude='*.safetensors' runs
echo "done in $((SECONDS - start)) s"
