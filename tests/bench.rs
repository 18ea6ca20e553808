//! `arelax bench --json` prints every field the issue names, on a tiny model (timings are not
//! asserted: only that they were measured).

use std::process::{Command, Output};

/// `arelax bench --json` with `args`.
fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arelax"))
        .args(["bench", "--json"])
        .args(args)
        .output()
        .unwrap()
}

/// [`bench`] of the tiled kernel on a 6-5-3 MLP at `batches`, as briefly as it runs, with `more`.
fn tiny_bench(batches: &str, more: &[&str]) -> Output {
    let tiny = ["--layers", "6,5,3", "--relax-steps", "2", "--samples", "1"];
    let brief = [
        "--warmup-ms",
        "1",
        "--relax-kernel",
        "tiled",
        "--batch-sizes",
        batches,
    ];
    bench(&[&tiny[..], &brief, more].concat())
}

#[test]
fn bench_json_has_every_field() {
    let o = bench(&[
        "--layers",
        "12,10,8,4",
        "--batch-sizes",
        "4,9",
        "--relax-steps",
        "3",
        "--samples",
        "3",
        "--warmup-ms",
        "10",
        "--tile",
        "auto,64x64",
        "--relax-kernel",
        "tiled,resident",
        "--resident",
        "auto,r2-t64",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Tiled: two tile choices × two batch sizes; resident (no tiles): two shapes × two batch
    // sizes.
    assert_eq!(lines.len(), 8, "one JSON object per configuration: {text}");
    for (i, (line, batch)) in lines.iter().zip([4, 9, 4, 9, 4, 9, 4, 9]).enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["batch_size"], batch);
        assert_eq!(v["relax_kernel"], if i >= 4 { "resident" } else { "tiled" });
        if i >= 4 {
            // The shape asked for, and the one it settled on (all rows and threads named).
            let choice = v["resident_choice"].as_str().unwrap();
            let shape = v["resident_shape"].as_str().unwrap();
            assert_eq!(choice, if i >= 6 { "r2-t64" } else { "auto" });
            let settled: arelax::gpu::resident::ResidentShape = shape.parse().unwrap();
            assert!(settled.rows.is_some() && settled.threads.is_some(), "{v}");
            assert!(
                v["resident_busiest_loads"].as_u64().is_some_and(|b| b > 0),
                "{v}"
            );
            if i >= 6 {
                // 64 threads take 32 loads in flight each, the most the automatic choice gives;
                // two rows walk K down on odd steps (zigzag); and a batch this small gets parts:
                // W₁ (80 weights) in three lower parts, W₂ (32) in the upper one, each thread's
                // weights in registers (c).
                assert_eq!(shape, "r2-t64-u32-p4-c-z");
                // Two rows per block of 4 workgroups; each block reads W₁ and W₂ (10·8 + 8·4
                // weights) per step.
                let blocks = (batch as u64).div_ceil(2);
                assert_eq!(v["resident_groups"], 4 * blocks);
                assert_eq!(
                    v["resident_weight_bytes_per_step"],
                    (blocks * 4 * 112) as f64
                );
            }
        } else {
            assert!(v.get("resident_shape").is_none(), "{v}");
        }
        let forced = (2..4).contains(&i);
        assert_eq!(v["tile_choice"], if forced { "64x64" } else { "auto" });
        if forced {
            assert_eq!(v["relax_tile"], "64x64");
            assert_eq!(v["grad_tile"], "64x64");
            assert_eq!(v["forward_tiles"].as_array().unwrap().len(), 3);
        }
        // Weight gradients unsplit, the update a dispatch of its own and waits blocking at
        // once unless asked for.
        assert_eq!(v["grad_split"], 1);
        assert_eq!(v["fused_update"], false);
        assert_eq!(v["wait_spin_us"], 0);
        assert_eq!(
            v["resident_tuned_ms"].as_array().unwrap().len(),
            0,
            "not tuned"
        );
        for key in ["adapter", "backend", "driver", "model", "relax_step_source"] {
            assert!(v[key].as_str().is_some_and(|s| !s.is_empty()), "{key}: {v}");
        }
        for stat in [
            "ar_step_ms",
            "bp_step_ms",
            "ar_encode_ms",
            "ar_step_pipelined_ms",
            "bp_step_pipelined_ms",
        ] {
            for f in ["median", "min", "max"] {
                assert!(
                    v[stat][f].as_f64().is_some_and(|x| x > 0.0),
                    "{stat}.{f}: {v}"
                );
            }
        }
        for key in [
            "ar_flop",
            "bp_flop",
            "relax_step_ms",
            "relax_sample_steps_per_s",
            "achieved_gflops",
            "ar_over_bp",
        ] {
            assert!(
                v[key].as_f64().is_some_and(|x| x.is_finite() && x >= 0.0),
                "{key}: {v}"
            );
        }
        // The submit is part of encoding and submitting.
        let submit = v["ar_submit_ms"]["median"].as_f64().unwrap();
        assert!(
            submit >= 0.0 && submit <= v["ar_encode_ms"]["max"].as_f64().unwrap(),
            "{v}"
        );
        // The wall time with timestamps written exactly where GPU time was measured.
        let timestamps = v["relax_step_source"].as_str().unwrap().starts_with("gpu");
        assert_eq!(v["ar_step_gpu_ms"].is_object(), timestamps, "{v}");
        assert_eq!(v["ar_step_timed_ms"].is_object(), timestamps, "{v}");
        if timestamps {
            assert!(
                v["ar_step_timed_ms"]["median"]
                    .as_f64()
                    .is_some_and(|x| x > 0.0),
                "{v}"
            );
        }
        assert_eq!(v["unrolled"], true, "{v}");
        // 2·B·(12·10 + 10·8 + 8·4) forward and gradients, T·2·B·(10·8 + 8·4) relaxation.
        let b = batch as f64;
        let expect = 2.0 * 2.0 * b * 232.0 + 3.0 * 2.0 * b * 112.0;
        assert_eq!(v["ar_flop"].as_f64().unwrap(), expect);
    }
}

/// A model file benchmarks through the same path (the graph engine), a forced tile shape applies
/// to its dense products, and an unknown shape is a one-line error.
#[test]
fn bench_takes_a_model_file() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/residual-mlp.toml");
    let run = |tile: &str| {
        let args = ["--model", model, "--batch-sizes", "3", "--tile", tile];
        bench(&[&args[..], &BRIEF].concat())
    };
    let o = run("auto");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["model"].as_str().unwrap().contains("graph"), "{v}");
    // Two relaxation steps against backprop's one pass: AR counts one more relaxation's FLOPs.
    let (ar, bp) = (
        v["ar_flop"].as_f64().unwrap(),
        v["bp_flop"].as_f64().unwrap(),
    );
    assert!(ar > bp && bp > 0.0, "{v}");
    assert_eq!(
        v["ar_kernels_ms"].as_array().unwrap().len(),
        0,
        "not asked for"
    );
    let o = run("32x32");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["relax_tile"], "32x32");
    let o = run("48x48");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown tile shape"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Two brief samples of two relaxation steps.
const BRIEF: [&str; 6] = ["--relax-steps", "2", "--samples", "2", "--warmup-ms", "1"];

/// The kernels `--kernel-times` timed (name, ms) from `bench`'s JSON, each time finite and not
/// negative; None on an adapter without timestamp queries (which must then time none).
fn kernel_times(o: &Output) -> Option<Vec<String>> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kernels: Vec<(String, f64)> = serde_json::from_value(v["ar_kernels_ms"].clone()).unwrap();
    if !v["relax_step_source"].as_str().unwrap().starts_with("gpu") {
        assert!(kernels.is_empty(), "{v}");
        return None;
    }
    assert!(
        kernels.iter().all(|k| k.1 >= 0.0 && k.1.is_finite()),
        "{kernels:?}"
    );
    Some(kernels.into_iter().map(|k| k.0).collect())
}

/// `--kernel-times` reports GPU time per kernel kind of a graph (the CNN: every VJP kind, the
/// combine, and each gradient kernel).
#[test]
fn bench_times_each_kernel_of_a_graph() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cnn.toml");
    let o = bench(
        &[
            &["--kernel-times", "--model", model, "--batch-sizes", "2"][..],
            &BRIEF,
        ]
        .concat(),
    );
    let Some(names) = kernel_times(&o) else {
        return;
    };
    for want in [
        "forward",
        "relax: dense VJPs",
        "relax: combine (conv and pool VJPs)",
        "gradients: dense",
        "gradients: conv",
        "update",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
}

/// `--kernel-times` on an MLP times each forward layer (the output layer's dispatch also
/// computes the output error), the relaxation, both gradient kernels (products, and the sum of
/// their K chunks when split) and the update, which `--fused-update` moves into the gradients'
/// last dispatch.
#[test]
fn bench_times_each_kernel_of_an_mlp() {
    let mlp = [
        "--layers",
        "6,5,4,3",
        "--grad-split",
        "2",
        "--relax-kernel",
        "tiled",
    ];
    let o = bench(&[&mlp[..], &["--kernel-times", "--batch-sizes", "5"], &BRIEF].concat());
    let Some(names) = kernel_times(&o) else {
        return;
    };
    let want = [
        "forward: layer 1",
        "forward: layer 2",
        "forward: output layer and error",
        "relax",
        "gradients: products",
        "gradients: sum of the K chunks",
        "update",
    ];
    assert_eq!(names, want);
    // With the SGD step in the gradients' last dispatch, unsplit and split.
    for (split, last) in [
        ("1", "gradients: products, then SGD"),
        ("2", "gradients: sum of the K chunks, then SGD"),
    ] {
        let args = [
            "--kernel-times",
            "--fused-update",
            "--grad-split",
            split,
            "--batch-sizes",
            "5",
        ];
        let o = bench(&[&mlp[..2], &mlp[4..], &args, &BRIEF].concat());
        let names = kernel_times(&o).expect("timed above");
        assert_eq!(names.last().map(String::as_str), Some(last), "{names:?}");
        assert!(!names.iter().any(|n| n == "update"), "{names:?}");
    }
}

/// Without --relax-kernel an MLP with a hidden layer is measured with both kernels (which is
/// faster depends on the device and the batch); a model without one, tiled only.
#[test]
fn bench_measures_both_kernels_by_default() {
    let common = [
        "--batch-sizes",
        "3",
        "--relax-steps",
        "2",
        "--samples",
        "1",
        "--warmup-ms",
        "1",
    ];
    let kernels = |layers: &str| -> Vec<String> {
        let o = bench(&[&["--layers", layers][..], &common].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["relax_kernel"].as_str().unwrap().to_string()
            })
            .collect()
    };
    assert_eq!(kernels("6,5,3"), ["tiled", "resident"]);
    assert_eq!(kernels("6,3"), ["tiled"]);
}

/// With replicas, one step trains every copy: the FLOP count covers all of them.
#[test]
fn bench_counts_every_replica() {
    let o = bench(&[
        "--layers",
        "12,10,8,4",
        "--batch-sizes",
        "5",
        "--relax-steps",
        "3",
        "--samples",
        "2",
        "--warmup-ms",
        "10",
        "--replicas",
        "3",
        "--relax-kernel",
        "tiled",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8(o.stdout).unwrap().trim()).unwrap();
    assert_eq!(v["replicas"], 3);
    let rows = 15.0;
    let expect = 2.0 * 2.0 * rows * 232.0 + 3.0 * 2.0 * rows * 112.0;
    assert_eq!(v["ar_flop"].as_f64().unwrap(), expect);
    let o = Command::new(env!("CARGO_BIN_EXE_arelax"))
        .args(["bench", "--layers", "12,4", "--replicas", "0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--replicas"));
}

/// `ARELAX_UNROLL=0` (the tiled products' loops left rolled, for comparison) is recorded.
#[test]
fn bench_records_rolled_loops() {
    let o = Command::new(env!("CARGO_BIN_EXE_arelax"))
        .env("ARELAX_UNROLL", "0")
        .args(["bench", "--json", "--layers", "6,5,3", "--batch-sizes", "2"])
        .args(["--relax-steps", "2", "--samples", "1", "--warmup-ms", "1"])
        .args(["--relax-kernel", "tiled"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["unrolled"], false, "{v}");
}

/// `--resident tune` times a few shapes per batch size and measures the fastest: recorded with
/// every shape's time, the one measured the argmin, its gradients the tiled kernel's.
#[test]
fn bench_tunes_the_resident_shape() {
    let o = bench(&[
        "--layers",
        "12,40,30,20,4",
        "--batch-sizes",
        "3,40",
        "--relax-steps",
        "3",
        "--samples",
        "2",
        "--warmup-ms",
        "1",
        "--relax-kernel",
        "resident",
        "--resident",
        "tune",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["resident_choice"], "tune", "{v}");
        let tuned: Vec<(String, f64)> =
            serde_json::from_value(v["resident_tuned_ms"].clone()).unwrap();
        assert!(tuned.len() >= 2, "the automatic shape and another: {v}");
        assert!(tuned.iter().all(|t| t.1 > 0.0 && t.1.is_finite()), "{v}");
        let fastest = tuned.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
        assert_eq!(v["resident_shape"], fastest.0.as_str(), "{v}");
        assert!(v["vs_tiled_rel_diff"].as_f64().unwrap() < 1e-5, "{v}");
    }
}

/// With `ARELAX_WAIT_SPIN_US` every wait polls before it blocks: recorded, the resident
/// kernel's gradients still the tiled kernel's; a value that is not a number is a clear error.
#[test]
fn bench_records_polling_waits() {
    let run = |spin: &str| {
        Command::new(env!("CARGO_BIN_EXE_arelax"))
            .env("ARELAX_WAIT_SPIN_US", spin)
            .args([
                "bench",
                "--json",
                "--layers",
                "6,5,4,3",
                "--batch-sizes",
                "3",
            ])
            .args(["--relax-steps", "5", "--samples", "3", "--warmup-ms", "1"])
            .args(["--relax-kernel", "resident"])
            .output()
            .unwrap()
    };
    let o = run("20000");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["wait_spin_us"], 20000, "{v}");
    assert!(v["vs_tiled_rel_diff"].as_f64().unwrap() < 1e-5, "{v}");
    let o = run("fast");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("ARELAX_WAIT_SPIN_US"),
        "{err}"
    );
}

/// `--grad-split` measures each number of weight-gradient chunks and records it; a bad value is
/// refused before anything is measured.
#[test]
fn bench_measures_each_gradient_split() {
    let o = tiny_bench("5", &["--grad-split", "1,3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let splits: Vec<u64> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["grad_split"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(splits, [1, 3]);
    let o = bench(&["--layers", "6,5,3", "--grad-split", "two"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--grad-split"), "{err}");
    assert!(o.stdout.is_empty(), "nothing measured");
}

/// `--plot` draws what was measured; `--from` reads `--json` output back without a GPU, prints
/// the same rows and draws the same figure; a file that is not bench output is a clear error.
#[test]
fn bench_results_plot_and_read_back() {
    let dir = std::env::temp_dir().join(format!("arelax-bench-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let measured = dir.join("measured.png");
    let o = tiny_bench("2,5", &["--plot", measured.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata(&measured).unwrap().len() > 1000);
    let jsonl = dir.join("bench.jsonl");
    std::fs::write(&jsonl, &o.stdout).unwrap();

    let redrawn = dir.join("redrawn.png");
    let o = Command::new(env!("CARGO_BIN_EXE_arelax"))
        .args(["bench", "--from", jsonl.to_str().unwrap()])
        .args(["--plot", redrawn.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.contains("MLP 6-5-3"), "{table}");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.trim_start().starts_with("2 |") || l.trim_start().starts_with("5 |"))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(std::fs::metadata(&redrawn).unwrap().len() > 1000);

    // `--from -` reads standard input (`arelax bench --json | arelax bench --from -`).
    let mut child = Command::new(env!("CARGO_BIN_EXE_arelax"))
        .args(["bench", "--from", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&std::fs::read(&jsonl).unwrap()).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let piped = String::from_utf8(o.stdout).unwrap();
    let rows = |t: &str| -> Vec<String> {
        let rows = t.lines().skip(1).filter(|l| !l.starts_with("figure:"));
        rows.map(String::from).collect()
    };
    assert_eq!(
        rows(&piped),
        rows(&table),
        "the same table after the 'from:' line"
    );

    // Measuring options make no sense with --from.
    let o = Command::new(env!("CARGO_BIN_EXE_arelax"))
        .args([
            "bench",
            "--from",
            jsonl.to_str().unwrap(),
            "--batch-sizes",
            "4",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--from"));

    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"batch_size\": 1}\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_arelax"))
        .args(["bench", "--from", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 1") && !err.contains("panicked"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A resident shape the kernel cannot hold, or one given without the resident kernel, is a
/// one-line error before anything is measured.
#[test]
fn bad_resident_shapes_are_refused_before_measuring() {
    for (args, expect) in [
        (
            &["--relax-kernel", "resident", "--resident", "r3"][..],
            "multiple of 4",
        ),
        (
            &["--relax-kernel", "resident", "--resident", "r4-q2"],
            "not a resident shape",
        ),
        (
            &["--relax-kernel", "tiled", "--resident", "r4"],
            "--relax-kernel resident",
        ),
    ] {
        let o = bench(args);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(expect) && !err.contains("panicked"), "{err}");
        assert!(o.stdout.is_empty(), "{args:?}: nothing measured");
    }
}
