//! The command-line tool as a user meets it: bad input gives one line naming the thing and the
//! problem, a non-zero exit and no panic; a killed run resumes to bit-identical weights.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use arelax::checkpoint::TensorFile;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_arelax"))
}

fn mnist_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("arelax-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The error lines a user sees (wgpu's driver chatter about XDG_RUNTIME_DIR filtered out).
fn error_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .map(str::to_string)
        .collect()
}

fn assert_clean_failure(o: &Output, needles: &[&str]) {
    let lines = error_lines(o);
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(lines[0].starts_with("error: "), "{lines:?}");
    assert!(!lines[0].contains("panicked"), "{lines:?}");
    for n in needles {
        assert!(lines[0].contains(n), "'{n}' missing from {lines:?}");
    }
}

const TINY: &[&str] = &[
    "--layers",
    "784,8,10",
    "--epochs",
    "1",
    "--relax-steps",
    "2",
    "--train-limit",
    "128",
    "--test-limit",
    "64",
];

#[test]
fn missing_data_directory() {
    // A run that fails before writing anything leaves no empty run directory behind.
    let out = temp_dir("nodata").join("run");
    let o = bin()
        .args(["train", "--data", "/nonexistent/mnist", "--out"])
        .arg(&out)
        .args(TINY)
        .output()
        .unwrap();
    assert_clean_failure(&o, &["/nonexistent/mnist", "not found"]);
    assert!(!out.exists(), "{} was left behind", out.display());
    let o = bin()
        .args([
            "train",
            "--dataset",
            "fashion-mnist",
            "--data",
            "/nonexistent/f",
            "--out",
        ])
        .arg(&out)
        .args(TINY)
        .output()
        .unwrap();
    assert_clean_failure(
        &o,
        &["/nonexistent/f", "apt-get install dataset-fashion-mnist"],
    );
    assert!(!out.exists(), "{} was left behind", out.display());
}

#[test]
fn a_run_refused_after_its_directory_was_made_removes_it() {
    // The graph engine refuses the cooperative kernel only once the trainer is built, after the
    // run directory was created: the empty directory goes again, an existing one stays.
    let parent = temp_dir("refused");
    for existed in [false, true] {
        let out = parent.join(format!("run-{existed}"));
        if existed {
            std::fs::create_dir_all(&out).unwrap();
        }
        let o = bin()
            .args(["train", "--model"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cnn.toml"))
            .args(["--relax-kernel", "cooperative", "--data"])
            .arg(mnist_dir())
            .arg("--out")
            .arg(&out)
            .args(&TINY[2..])
            .output()
            .unwrap();
        assert_clean_failure(&o, &["cooperative", "MLPs only"]);
        assert_eq!(out.exists(), existed, "{}", out.display());
    }
}

#[test]
fn corrupt_data_file() {
    let dir = temp_dir("corrupt");
    for f in std::fs::read_dir(mnist_dir()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let labels = dir.join("t10k-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&labels).unwrap();
    std::fs::write(&labels, &bytes[..bytes.len() / 2]).unwrap();
    let out = temp_dir("corrupt-out");
    let o = bin()
        .args(["train", "--data"])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .args(TINY)
        .output()
        .unwrap();
    assert_clean_failure(&o, &["t10k-labels-idx1-ubyte.gz"]);
}

#[test]
fn malformed_config_and_impossible_settings() {
    let dir = temp_dir("config");
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, "epochs = 2\nbatch_size = -4\n").unwrap();
    let o = bin()
        .args(["train", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_clean_failure(&o, &["c.toml", "line 2"]);
    std::fs::write(&cfg, "epochs = 2\nlearning_rate = 0.1\n").unwrap();
    let o = bin()
        .args(["train", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_clean_failure(&o, &["c.toml", "learning_rate"]);
    for (flag, value, key) in [
        ("--relax-rate", "3", "relax_rate"),
        ("--batch-size", "0", "batch_size"),
        ("--relax-steps", "0", "relax_steps"),
        ("--preset", "nope", "unknown preset"),
        ("--lr", "inf", "lr"),
        // A negative number is a value that validation rejects, not an unknown flag.
        ("--lr", "-1", "lr: -1"),
        ("--relax-rate", "-0.5", "relax"),
    ] {
        let o = bin()
            .args(["train", flag, value, "--out"])
            .arg(dir.join("x"))
            .output()
            .unwrap();
        assert_clean_failure(&o, &[key]);
    }
}

#[test]
fn bad_checkpoints() {
    let dir = temp_dir("ckpt");
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"definitely not a safetensors file").unwrap();
    let o = bin()
        .args(["eval", "--checkpoint"])
        .arg(&junk)
        .output()
        .unwrap();
    assert_clean_failure(&o, &["junk.safetensors", "not a valid safetensors file"]);
    // Right format, wrong shapes for the model.
    let spec = arelax::model::ModelSpec::new(
        vec![784, 5, 10],
        arelax::model::Activation::Relu,
        arelax::model::Loss::Mse,
    )
    .unwrap();
    let mut f = TensorFile::default();
    f.insert_params(
        "",
        &spec,
        &arelax::model::Params::init(&spec, arelax::model::Init::FanIn, 1),
    );
    let wrong = dir.join("wrong.safetensors");
    f.save(&wrong).unwrap();
    let o = bin()
        .args(["eval", "--layers", "784,6,10", "--data"])
        .arg(mnist_dir())
        .arg("--checkpoint")
        .arg(&wrong)
        .output()
        .unwrap();
    assert_clean_failure(
        &o,
        &[
            "wrong.safetensors",
            "layers.0.weight",
            "[5, 784]",
            "[6, 784]",
        ],
    );
    let truncated = dir.join("truncated.safetensors");
    let bytes = std::fs::read(&wrong).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let o = bin()
        .args(["eval", "--checkpoint"])
        .arg(&truncated)
        .output()
        .unwrap();
    assert_clean_failure(&o, &["truncated.safetensors"]);
}

fn weights(run: &Path) -> TensorFile {
    TensorFile::load(&run.join("checkpoint.safetensors")).unwrap()
}

fn epochs_done(run: &Path) -> usize {
    std::fs::read_to_string(run.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["epochs_done"].as_u64())
        .unwrap_or(0) as usize
}

/// Kill a training process during its second epoch, resume it, and get the weights of an
/// uninterrupted run exactly.
#[test]
fn a_killed_run_resumes_to_identical_weights() {
    let dir = temp_dir("kill");
    let settings = [
        "--layers",
        "784,32,10",
        "--epochs",
        "3",
        "--relax-steps",
        "10",
        "--train-limit",
        "6400",
        "--test-limit",
        "200",
        "--lr",
        "0.001",
    ];
    let full = dir.join("full");
    let o = bin()
        .arg("train")
        .args(settings)
        .arg("--data")
        .arg(mnist_dir())
        .arg("--out")
        .arg(&full)
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", error_lines(&o));

    let killed = dir.join("killed");
    let mut child = bin()
        .arg("train")
        .args(settings)
        .arg("--data")
        .arg(mnist_dir())
        .arg("--out")
        .arg(&killed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while epochs_done(&killed) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "first epoch never finished"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        epochs_done(&killed) < 3,
        "the run finished before the kill; the test proved nothing"
    );
    // The checkpoint left behind is complete and loadable.
    assert!(weights(&killed).tensors.contains_key("layers.1.weight"));
    let o = bin()
        .arg("train")
        .arg("--resume")
        .arg(&killed)
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", error_lines(&o));
    assert_eq!(epochs_done(&killed), 3);
    let (a, b) = (weights(&full), weights(&killed));
    for name in [
        "layers.0.weight",
        "layers.0.bias",
        "layers.1.weight",
        "layers.1.bias",
    ] {
        assert_eq!(
            a.tensors[name], b.tensors[name],
            "{name} differs after resume"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A diverging run stops with the epoch and batch named and leaves the last good checkpoint.
#[test]
fn divergence_stops_cleanly_and_keeps_the_last_good_checkpoint() {
    let dir = temp_dir("diverge");
    let run = dir.join("run");
    let o = bin()
        .args([
            "train",
            "--layers",
            "784,16,10",
            "--epochs",
            "1",
            "--relax-steps",
            "3",
            "--train-limit",
            "640",
            "--test-limit",
            "64",
            "--data",
        ])
        .arg(mnist_dir())
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", error_lines(&o));
    let before = weights(&run);
    // Resume for a second epoch with an absurd learning rate.
    let o = bin()
        .args(["train", "--epochs", "2", "--lr", "1e30", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    assert_clean_failure(&o, &["diverged", "epoch 2", "batch", "seed 1"]);
    assert_eq!(epochs_done(&run), 1);
    let after = weights(&run);
    assert_eq!(
        before.tensors, after.tensors,
        "the epoch-1 checkpoint must be untouched"
    );
    assert_eq!(after.metadata.get("epoch").map(String::as_str), Some("1"));
    let _ = std::fs::remove_dir_all(dir);
}

/// Buffers beyond the adapter's limits are refused before anything runs, naming the limit.
#[test]
fn models_too_large_for_the_adapter_name_the_limit() {
    let o = bin()
        .args([
            "gradcheck",
            "--layers",
            "784,200000,10",
            "--batch-size",
            "512",
            "--relax-steps",
            "1",
        ])
        .output()
        .unwrap();
    assert_clean_failure(
        &o,
        &[
            "max_storage_buffer_binding_size",
            "MiB",
            "smaller batch size",
        ],
    );
}

/// A malformed model file is rejected before training, naming the file and the node.
#[test]
fn malformed_model_file() {
    let dir = temp_dir("model");
    let m = dir.join("bad.toml");
    std::fs::write(&m, "[[node]]\nid = \"x\"\nkind = \"input\"\nsize = 4\n[[node]]\nid = \"y\"\nkind = \"dens\"\ninputs = [\"x\"]\n").unwrap();
    let o = bin()
        .args(["gradcheck", "--model"])
        .arg(&m)
        .output()
        .unwrap();
    assert_clean_failure(&o, &["bad.toml", "'y'", "dens"]);
    std::fs::write(&m, "[[node]]\nid = \"x\"\nkind = \"input\"\nsize = 4\n[[node]]\nid = \"y\"\nkind = \"dense\"\ninputs = [\"z\"]\nunits = 2\nactivation = \"linear\"\n").unwrap();
    let o = bin().args(["train", "--model"]).arg(&m).output().unwrap();
    assert_clean_failure(&o, &["bad.toml", "'y'", "'z'"]);
}

/// Settings paths that are not regular files are refused at once (no endless read of a device).
#[test]
fn settings_paths_that_are_not_files() {
    let o = bin()
        .args(["gradcheck", "--model", "/dev/zero"])
        .output()
        .unwrap();
    assert_clean_failure(&o, &["/dev/zero", "not a regular file"]);
    let dir = temp_dir("settings-dir");
    let o = bin()
        .args(["train", "--config"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_clean_failure(&o, &["not a regular file"]);
}

/// `arelax experiment` end to end: seeds side by side from the flag, the table printed, and a
/// zero group size refused in one line.
#[test]
fn experiment_command_trains_seeds_side_by_side() {
    let dir = temp_dir("experiment-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("grid.toml");
    std::fs::write(
        &file,
        format!(
            "conditions = [\"ar\", \"bp\"]\nseeds = [1, 2]\ndatasets = [\"mnist\"]\n[data]\nmnist = \"{}\"\n[base]\nlayers = \"784,8,10\"\nepochs = 1\nrelax_steps = 2\ntrain_limit = 128\ntest_limit = 64\n",
            mnist_dir().display()
        ),
    )
    .unwrap();
    let experiment = |parallel: &str| {
        bin()
            .args(["experiment", "--parallel-seeds", parallel, "--config"])
            .arg(&file)
            .arg("--out")
            .arg(dir.join("out"))
            .output()
            .unwrap()
    };
    assert_clean_failure(&experiment("0"), &["--parallel-seeds"]);
    let o = experiment("2");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{:?}", error_lines(&o));
    assert!(text.contains("(2 seeds side by side)"), "{text}");
    assert_eq!(
        text.matches(", 2 seeds side by side)").count(),
        4,
        "every run reports its group: {text}"
    );
    assert!(text.contains("| mnist | ar |") && text.contains("| mnist | bp |"));
    assert!(
        dir.join("out/mnist/bp/seed-2/checkpoint.safetensors")
            .exists()
    );
    assert!(
        text.contains("wrote results.md, results.csv, accuracy-mnist.png"),
        "{text}"
    );
    // Summarising a finished grid trains nothing and draws plots that are missing (runs trained
    // where no font was found).
    let curves = dir.join("out/mnist/ar/seed-1/curves.png");
    std::fs::remove_file(&curves).unwrap();
    let o = experiment("2");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{:?}", error_lines(&o));
    assert!(
        !text.contains(": test accuracy"),
        "nothing retrains: {text}"
    );
    assert!(curves.exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// Output piped into a reader that has already gone (`arelax ... | head -1`) ends the process
/// the Unix way, without a panic message.
#[cfg(unix)]
#[test]
fn a_closed_output_pipe_is_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let jsonl = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/results/h100-2026-11-27/bench.jsonl"
    );
    // The read end is closed before the process starts, so its first write meets a closed pipe
    // (closing it after the spawn raced with the output and sometimes lost).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = bin()
        .args(["bench", "--from", jsonl])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        o.status.signal(),
        Some(13),
        "killed by SIGPIPE: {:?}",
        o.status
    );
}
