#!/usr/bin/env bash
# The device measurements for a session that has a GPU (see the README's "Measuring on a GPU").
# Prepare here:   cargo build --release && ../shared/tools/gpu-prep.sh target/release/arelax
# Run there:      bash scripts/gpu-check.sh   (through the device tool, carrying .gl and .bin)
# Everything goes to $OUT (or ./gpu-out) as text and JSON.
set -uo pipefail
out="${OUT:-gpu-out}"; mkdir -p "$out"
source .gl/setup.sh
bin=./.bin/arelax
$bin info 2>&1 | tee "$out/info.txt"
$bin bench --batch-sizes 64,1024,4096 --relax-steps 100 2>&1 | tee "$out/bench.txt"
$bin bench --json --batch-sizes 64,256,1024,4096 --relax-steps 100 > "$out/bench.jsonl" 2>/dev/null
$bin gradcheck --layers 784,300,300,100,10 --batch-size 64 --relax-steps 100 --seed 1 2>&1 | tail -6 | tee "$out/gradcheck.txt"
# One epoch of the paper's default run: the epoch line reports samples/s and the CSV the seconds.
$bin train --epochs 1 --out "$out/epoch" --force 2>&1 | tee "$out/train-epoch.txt"
