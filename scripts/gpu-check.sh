#!/usr/bin/env bash
# Every device measurement in one call, sized for one session's device time (see the README's
# "Measuring on a GPU").
#
# Prepare here:  scripts/gpu-prepare.sh
# Run there:     bash scripts/gpu-check.sh [SECONDS]   (carrying .gl, .bin and .data; default
#                budget 540 s, which leaves a 600 s command limit some slack)
#
# Order of priority: the throughput benchmark (a tile-shape sweep, five seeds side by side), the
# gradient check and one timed epoch, then the CNN experiment (three seeds side by side) and the
# paper's MLP experiment (finished on 2026-11-27, so it only re-summarises), each with a time
# limit.
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
for f in /opt/torch/.venv/lib/python3*/site-packages/matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf; do
    if [ -z "${ARELAX_FONT:-}" ] && [ -f "$f" ]; then export ARELAX_FONT="$f"; fi
done
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
timeout 60 $bin bench --model examples/cnn.toml --batch-sizes 64,1024 --relax-steps 100 --kernel-times
timeout 40 $bin bench --model examples/cnn.toml --batch-sizes 64 --relax-steps 100 --replicas 3
echo "== gradcheck =="
timeout 30 $bin gradcheck --layers 784,300,300,100,10 --batch-size 64 --relax-steps 100 --seed 1 | tail -8
echo "== one epoch of the paper's default run =="
timeout 60 $bin train --epochs 1 --out runs/epoch --force

# The CNN grid first: the paper's MLP grid is complete in results/ and only re-summarises. A
# group of three CNN seeds takes about two minutes (H100, 2026-11-27), and one that starts just
# before the time limit would be cut by the timeout, so the limit leaves about a group's time.
rest=$(( $(left) - 30 ))
if [ "$rest" -gt 150 ]; then
    echo "== CNN experiment (${rest} s) =="
    timeout $((rest + 20)) $bin experiment --config experiments/cnn-mnist.toml \
        --time-limit "$(awk "BEGIN { print ($rest - 110) / 60 }")"
fi
rest=$(( $(left) - 10 ))
if [ "$rest" -gt 20 ]; then
    echo "== paper MLP experiment (${rest} s) =="
    timeout "$rest" $bin experiment --config experiments/paper-mlp.toml \
        --time-limit "$(awk "BEGIN { print $rest / 60 }")"
fi
tar czf "$out/runs.tgz" --exclude='*.safetensors' runs
echo "done in $((SECONDS - start)) s"
