//! Bench results read back from `arelax bench --json` output (one JSON object per line), and
//! their figure: GPU time per AR training step and per relaxation step against batch size, one
//! line per configuration (relaxation kernel, tile choice, rolled loops, replicas), with exact
//! backprop's training step for scale.

use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::BenchResult;
use crate::plot::{Panel, Series, Stroke};
use crate::{Error, Result};

/// serde_json writes a non-finite number as `null`; read it back as infinity (a rate over a time
/// too short to measure).
pub fn number_or_infinity<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// Every result in a JSON-lines file (`-`: standard input), in order; blank lines are skipped.
/// A line that is not a bench result is an error naming the file and the line.
pub fn read_jsonl(path: &Path) -> Result<Vec<BenchResult>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|e| Error::file(path, e))?
    } else {
        std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r = serde_json::from_str(line).map_err(|e| {
            Error::file(
                path,
                format!("line {}: not an `arelax bench --json` result: {e}", i + 1),
            )
        })?;
        out.push(r);
    }
    if out.is_empty() {
        return Err(Error::file(path, "holds no bench results"));
    }
    Ok(out)
}

/// The measured AR or backprop step: GPU time where the adapter had timestamps, else wall time.
fn ar_step_ms(r: &BenchResult) -> f64 {
    r.ar_step_gpu_ms.unwrap_or(r.ar_step_ms).median
}

fn bp_step_ms(r: &BenchResult) -> f64 {
    r.bp_step_gpu_ms.unwrap_or(r.bp_step_ms).median
}

/// How a configuration reads in the figure's legend: "tiled 32x32", "cooperative auto",
/// "resident", then ", rolled loops" and ", 5 replicas" where they apply.
pub fn configuration(r: &BenchResult) -> String {
    let mut s = match r.relax_kernel.as_str() {
        "resident" => "resident".to_string(),
        k => format!("{k} {}", r.tile_choice),
    };
    if !r.unrolled {
        s.push_str(", rolled loops");
    }
    if r.replicas > 1 {
        s.push_str(&format!(", {} replicas", r.replicas));
    }
    s
}

/// A line's look: its colour names the tile choice, its stroke the kernel (solid tiled, dashed
/// cooperative or resident) or rolled loops (dotted), so one shape's variants share a colour.
fn look(r: &BenchResult) -> (Stroke, usize) {
    const TILES: [&str; 6] = ["16x16", "32x32", "64x64", "128x64", "128x128", "auto"];
    let colour = match r.relax_kernel.as_str() {
        "resident" => 6,
        _ => TILES.iter().position(|t| *t == r.tile_choice).unwrap_or(8),
    };
    let stroke = if !r.unrolled {
        Stroke::Dotted
    } else if r.relax_kernel == "tiled" {
        Stroke::Solid
    } else {
        Stroke::Dashed
    };
    (stroke, colour)
}

/// Backprop's line: grey (palette entry 7, which no tile choice takes).
const BACKPROP_COLOUR: usize = 7;

/// What a set of results has in common, or None where they differ.
fn common<T: PartialEq + Clone>(
    results: &[BenchResult],
    f: impl Fn(&BenchResult) -> T,
) -> Option<T> {
    let first = f(&results[0]);
    results.iter().all(|r| f(r) == first).then_some(first)
}

/// The figure's two panels: ms per AR training step and µs per relaxation step against batch
/// size (both axes logarithmic), styled by `look`. Where the results mix adapters, models or
/// step counts, each legend entry names its own.
pub fn figure(results: &[BenchResult]) -> Vec<Panel> {
    if results.is_empty() {
        return Vec::new();
    }
    let adapter = common(results, |r| r.adapter.clone());
    let model = common(results, |r| r.model.clone());
    let steps = common(results, |r| r.relax_steps);
    // Each line's own context, where the file's results do not share it.
    let context = |r: &BenchResult| {
        let mut parts = Vec::new();
        if adapter.is_none() {
            parts.push(r.adapter.clone());
        }
        if model.is_none() {
            parts.push(r.model.split(" (").next().unwrap_or(&r.model).to_string());
        }
        if steps.is_none() {
            parts.push(format!("T={}", r.relax_steps));
        }
        parts.join(", ")
    };
    let with_context = |label: String, r: &BenchResult| {
        let c = context(r);
        if c.is_empty() {
            label
        } else {
            format!("{c}: {label}")
        }
    };

    // One line per configuration, in the order the file first names it.
    let mut lines: Vec<(String, Vec<&BenchResult>)> = Vec::new();
    for r in results {
        let label = with_context(configuration(r), r);
        match lines.iter_mut().find(|l| l.0 == label) {
            Some(l) => l.1.push(r),
            None => lines.push((label, vec![r])),
        }
    }
    // Backprop's fastest step per batch size, per context.
    let mut backprop: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in results {
        let label = with_context("backprop (fastest configuration)".into(), r);
        let point = (r.batch_size as f64, bp_step_ms(r));
        let line = match backprop.iter_mut().find(|l| l.0 == label) {
            Some(l) => &mut l.1,
            None => {
                backprop.push((label, Vec::new()));
                &mut backprop.last_mut().expect("just pushed").1
            }
        };
        match line.iter_mut().find(|p| p.0 == point.0) {
            Some(p) => p.1 = p.1.min(point.1),
            None => line.push(point),
        }
    }

    let series = |y: &dyn Fn(&BenchResult) -> f64| -> Vec<Series> {
        lines
            .iter()
            .map(|(label, rs)| {
                let mut points: Vec<(f64, f64)> =
                    rs.iter().map(|r| (r.batch_size as f64, y(r))).collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                let (stroke, colour) = look(rs[0]);
                Series {
                    stroke,
                    colour: Some(colour),
                    ..Series::line(label.clone(), points)
                }
            })
            .collect()
    };
    let mut step = series(&ar_step_ms);
    step.extend(backprop.into_iter().map(|(label, mut points)| {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Series {
            colour: Some(BACKPROP_COLOUR),
            ..Series::line(label, points)
        }
    }));
    let relax = series(&|r| 1e3 * r.relax_step_ms);

    let timed = if results.iter().all(|r| r.ar_step_gpu_ms.is_some()) {
        "GPU timestamps"
    } else if results.iter().all(|r| r.ar_step_gpu_ms.is_none()) {
        "wall time"
    } else {
        "GPU time where timed, else wall"
    };
    let on = adapter.map(|a| format!("{a}: ")).unwrap_or_default();
    let t = steps
        .map(|t| format!(" ({t} relaxation steps)"))
        .unwrap_or_default();
    vec![
        Panel {
            title: format!("{on}AR training step{t}"),
            x_label: "batch size".into(),
            y_label: format!("ms per training step ({timed})"),
            log_x: true,
            log_y: true,
            series: step,
        },
        Panel {
            title: format!("{on}one relaxation step, all layers"),
            x_label: "batch size".into(),
            y_label: format!("µs per relaxation step ({timed})"),
            log_x: true,
            log_y: true,
            series: relax,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Stat;

    fn h100() -> Vec<BenchResult> {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("results/h100-2026-11-27/bench.jsonl");
        read_jsonl(&path).unwrap()
    }

    /// The first H100 results predate `unrolled`, `vs_tiled_rel_diff`, `cooperative_groups` and
    /// `ar_kernels_ms`: they read, as runs with rolled loops.
    #[test]
    fn older_results_read_with_defaults() {
        let rs = h100();
        assert_eq!(rs.len(), 12);
        assert!(
            rs.iter()
                .all(|r| !r.unrolled && r.vs_tiled_rel_diff.is_none())
        );
        assert_eq!(rs[0].batch_size, 64);
        assert_eq!(rs[0].ar_step_gpu_ms.unwrap().median, 2.2100479999999996);
        assert_eq!(configuration(&rs[0]), "tiled 32x32, rolled loops");
    }

    #[test]
    fn null_rates_read_as_infinity_and_bad_lines_are_named() {
        let dir = std::env::temp_dir().join(format!("arelax-saved-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut v = serde_json::to_value(&h100()[0]).unwrap();
        v["relax_sample_steps_per_s"] = serde_json::Value::Null;
        let good = dir.join("good.jsonl");
        std::fs::write(&good, format!("\n{v}\n\n")).unwrap();
        let rs = read_jsonl(&good).unwrap();
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].relax_sample_steps_per_s, f64::INFINITY);

        let bad = dir.join("bad.jsonl");
        std::fs::write(&bad, format!("{v}\n{{\"batch_size\": 3}}\n")).unwrap();
        let e = read_jsonl(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl") && e.contains("line 2"), "{e}");
        let empty = dir.join("empty.jsonl");
        std::fs::write(&empty, "\n").unwrap();
        assert!(
            read_jsonl(&empty)
                .unwrap_err()
                .to_string()
                .contains("no bench results")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// One line per configuration with its points in batch order, a tile's variants in one
    /// colour told apart by stroke, and backprop's fastest step per batch size.
    #[test]
    fn figure_has_a_line_per_configuration() {
        let mut rs = h100();
        // The 64x64 rows again, as the cooperative kernel with unrolled loops.
        let coop: Vec<BenchResult> = rs
            .iter()
            .filter(|r| r.relax_tile == "64x64")
            .map(|r| BenchResult {
                relax_kernel: "cooperative".into(),
                unrolled: true,
                bp_step_gpu_ms: r.bp_step_gpu_ms.map(|s| Stat { median: 0.01, ..s }),
                ..r.clone()
            })
            .collect();
        rs.extend(coop);
        let panels = figure(&rs);
        assert_eq!(panels.len(), 2);
        let step = &panels[0].series;
        let labels: Vec<&str> = step.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "tiled 32x32, rolled loops",
                "tiled 64x64, rolled loops",
                "tiled 128x64, rolled loops",
                "tiled 128x128, rolled loops",
                "cooperative 64x64",
                "backprop (fastest configuration)",
            ]
        );
        assert_eq!((step[1].stroke, step[1].colour), (Stroke::Dotted, Some(2)));
        assert_eq!((step[4].stroke, step[4].colour), (Stroke::Dashed, Some(2)));
        let xs: Vec<f64> = step[0].points.iter().map(|p| p.0).collect();
        assert_eq!(xs, [64.0, 1024.0, 4096.0]);
        assert_eq!(step[0].points[0].1, 2.2100479999999996);
        // Backprop's line takes the smallest step at each batch size (the cooperative rows').
        assert!(step[5].points.iter().all(|p| p.1 == 0.01));
        // The relaxation panel: µs per step, no backprop line.
        assert_eq!(panels[1].series.len(), 5);
        assert!((panels[1].series[0].points[0].1 - 21.06208).abs() < 1e-9);
        assert!(panels.iter().all(|p| p.log_x && p.log_y));
        assert!(panels[0].title.starts_with("NVIDIA H100 80GB HBM3: "));
    }
}
