//! Bench results read back from `arelax bench --json` output (one JSON object per line), and
//! their figure: GPU time per AR training step and per relaxation step against batch size, one
//! line per configuration (relaxation kernel, tile choice, rolled loops, replicas), with exact
//! backprop's training step for scale.

use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::BenchResult;
use crate::gpu::tile::TileShape;
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
/// "resident" (or "resident r4-t1024" for a forced shape), then ", rolled loops", ", 5 replicas"
/// ", gradients in 4 chunks" and ", waits poll 20000 µs" where they apply.
pub fn configuration(r: &BenchResult) -> String {
    let mut s = match (r.relax_kernel.as_str(), &r.resident_choice) {
        ("resident", Some(choice)) => format!("resident {choice}"),
        ("resident", None) => "resident".to_string(),
        (k, _) => format!("{k} {}", r.tile_choice),
    };
    if !r.unrolled {
        s.push_str(", rolled loops");
    }
    if r.replicas > 1 {
        s.push_str(&format!(", {} replicas", r.replicas));
    }
    if r.grad_split > 1 {
        s.push_str(&format!(", gradients in {} chunks", r.grad_split));
    }
    if r.fused_update {
        s.push_str(", SGD in the gradients' dispatch");
    }
    if r.wait_spin_us > 0 {
        s.push_str(&format!(", waits poll {} µs", r.wait_spin_us));
    }
    s
}

/// A line's look: its colour names the tile choice, its stroke the kernel (solid tiled, dashed
/// cooperative or resident) or rolled loops (dotted), so one shape's variants share a colour.
/// A full tile spec (not one of [`TileShape::ALL`]) or a forced resident shape has no fixed
/// colour: None, and the figure gives each its own from [`SPEC_COLOURS`] (see [`colour_key`]).
fn look(r: &BenchResult) -> (Stroke, Option<usize>) {
    // Palette entries 0-4 are the shapes, smallest first; 5 auto, 6 resident, 7 backprop.
    let shape = TileShape::ALL
        .iter()
        .position(|t| t.to_string() == r.tile_choice);
    let colour = match (r.relax_kernel.as_str(), r.tile_choice.as_str()) {
        ("resident", _) if r.resident_choice.as_deref().is_none_or(|c| c == "auto") => Some(6),
        ("resident", _) => None,
        (_, "auto") => Some(5),
        _ => shape,
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

/// What a line without a fixed colour is told apart by: its tile spec, or its resident shape.
fn colour_key(r: &BenchResult) -> String {
    match (r.relax_kernel.as_str(), &r.resident_choice) {
        ("resident", Some(choice)) => format!("resident {choice}"),
        _ => r.tile_choice.clone(),
    }
}

/// Backprop's line: grey (palette entry 7, which no tile choice takes).
const BACKPROP_COLOUR: usize = 7;
/// Palette entries for full tile specs, in the order a figure first names them (then again).
const SPEC_COLOURS: [usize; 8] = [8, 9, 10, 11, 12, 13, 14, 15];

/// What a set of results has in common, or None where they differ.
fn common<T: PartialEq + Clone>(
    results: &[&BenchResult],
    f: impl Fn(&BenchResult) -> T,
) -> Option<T> {
    let first = f(results[0]);
    results.iter().all(|r| f(r) == first).then_some(first)
}

/// A name for the results of one file in a figure that compares several: the file's stem, or
/// its folder's name when the file is the usual `bench.jsonl` (`results/h100-2026-11-27/`).
pub fn set_name(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    match stem.as_deref() {
        Some("bench") | None => path
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string()),
        Some(s) => s.to_string(),
    }
}

/// The figure's two panels: ms per AR training step and µs per relaxation step against batch
/// size (both axes logarithmic), styled by `look`. Where the results mix adapters, models or
/// step counts, each legend entry names its own. Several named sets (files) are compared: each
/// entry names its set, and the stroke tells the sets apart (solid, dashed, dotted) while the
/// colour still names the tile choice.
pub fn figure(sets: &[(String, Vec<BenchResult>)]) -> Vec<Panel> {
    let tagged: Vec<(usize, &BenchResult)> = sets
        .iter()
        .enumerate()
        .flat_map(|(i, (_, rs))| rs.iter().map(move |r| (i, r)))
        .collect();
    if tagged.is_empty() {
        return Vec::new();
    }
    let all: Vec<&BenchResult> = tagged.iter().map(|&(_, r)| r).collect();
    let adapter = common(&all, |r| r.adapter.clone());
    let model = common(&all, |r| r.model.clone());
    let steps = common(&all, |r| r.relax_steps);
    let compare = sets.len() > 1;
    // Each line's own context, where the results do not share it.
    let context = |set: usize, r: &BenchResult| {
        let mut parts = Vec::new();
        if compare {
            parts.push(sets[set].0.clone());
        }
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
    let with_context = |label: String, set: usize, r: &BenchResult| {
        let c = context(set, r);
        if c.is_empty() {
            label
        } else {
            format!("{c}: {label}")
        }
    };

    // One line per configuration, in the order the files first name it.
    let mut lines: Vec<(String, usize, Vec<&BenchResult>)> = Vec::new();
    for &(set, r) in &tagged {
        let label = with_context(configuration(r), set, r);
        match lines.iter_mut().find(|l| l.0 == label) {
            Some(l) => l.2.push(r),
            None => lines.push((label, set, vec![r])),
        }
    }
    // Backprop's fastest step per batch size, per context.
    struct Backprop {
        label: String,
        set: usize,
        points: Vec<(f64, f64)>,
    }
    let mut backprop: Vec<Backprop> = Vec::new();
    for &(set, r) in &tagged {
        let label = with_context("backprop (fastest configuration)".into(), set, r);
        let point = (r.batch_size as f64, bp_step_ms(r));
        let line = match backprop.iter_mut().find(|l| l.label == label) {
            Some(l) => &mut l.points,
            None => {
                let points = Vec::new();
                backprop.push(Backprop { label, set, points });
                &mut backprop.last_mut().expect("just pushed").points
            }
        };
        match line.iter_mut().find(|p| p.0 == point.0) {
            Some(p) => p.1 = p.1.min(point.1),
            None => line.push(point),
        }
    }
    let set_stroke = |set: usize| [Stroke::Solid, Stroke::Dashed, Stroke::Dotted][set % 3];
    // The full tile specs, in order of first appearance, for their colours.
    let mut specs: Vec<String> = Vec::new();
    for (_, _, rs) in &lines {
        let key = colour_key(rs[0]);
        if look(rs[0]).1.is_none() && !specs.contains(&key) {
            specs.push(key);
        }
    }

    let series = |y: &dyn Fn(&BenchResult) -> f64| -> Vec<Series> {
        lines
            .iter()
            .map(|(label, set, rs)| {
                let mut points: Vec<(f64, f64)> =
                    rs.iter().map(|r| (r.batch_size as f64, y(r))).collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                let (stroke, colour) = look(rs[0]);
                let colour = colour.unwrap_or_else(|| {
                    let i = specs.iter().position(|t| *t == colour_key(rs[0]));
                    SPEC_COLOURS[i.expect("every spec is listed") % SPEC_COLOURS.len()]
                });
                Series {
                    stroke: if compare { set_stroke(*set) } else { stroke },
                    colour: Some(colour),
                    ..Series::line(label.clone(), points)
                }
            })
            .collect()
    };
    let mut step = series(&ar_step_ms);
    step.extend(backprop.into_iter().map(|mut b| {
        b.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Series {
            colour: Some(BACKPROP_COLOUR),
            stroke: set_stroke(b.set),
            ..Series::line(b.label, b.points)
        }
    }));
    let relax = series(&|r| 1e3 * r.relax_step_ms);

    let timed = if all.iter().all(|r| r.ar_step_gpu_ms.is_some()) {
        "GPU timestamps"
    } else if all.iter().all(|r| r.ar_step_gpu_ms.is_none()) {
        "wall time"
    } else {
        "GPU time where timed, else wall"
    };
    let on = adapter.map(|a| format!("{a}: ")).unwrap_or_default();
    let t = steps
        .map(|t| format!(" ({t} relaxation steps)"))
        .unwrap_or_default();
    let panel = |title: String, unit: &str, series| Panel {
        title,
        x_label: "batch size".into(),
        y_label: format!("{unit} ({timed})"),
        log_x: true,
        log_y: true,
        series,
    };
    vec![
        panel(
            format!("{on}AR training step{t}"),
            "ms per training step",
            step,
        ),
        panel(
            format!("{on}one relaxation step, all layers"),
            "µs per relaxation step",
            relax,
        ),
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
        let panels = figure(&[(String::new(), rs)]);
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

    /// Full tile specs have no fixed colour: each gets its own, in order of first appearance,
    /// never one of the named shapes' (the third call of the second H100 session's sweep).
    #[test]
    fn each_full_tile_spec_has_its_own_colour() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results/h100-2026-11-27b/third-call/bench-tiles.jsonl");
        let rs = read_jsonl(&path).unwrap();
        let panels = figure(&[(String::new(), rs)]);
        let step = &panels[0].series;
        assert_eq!(step.len(), 12, "3 named shapes, 8 specs, backprop");
        assert_eq!(step[0].label, "tiled 16x16");
        assert_eq!(step[3].label, "tiled 16x16-r4x4-k4-s8");
        let colours: Vec<usize> = step.iter().map(|s| s.colour.unwrap()).collect();
        assert_eq!(
            colours,
            [0, 1, 2, 8, 9, 10, 11, 12, 13, 14, 15, BACKPROP_COLOUR]
        );
    }

    /// The resident kernel: "auto" is one line across batch sizes (its settled shape may change
    /// with the batch) in the resident colour; each forced shape is a line of its own colour.
    #[test]
    fn resident_shapes_are_lines_of_their_own() {
        let base: Vec<BenchResult> = h100()
            .into_iter()
            .filter(|r| r.relax_tile == "32x32")
            .collect();
        let mut rs = Vec::new();
        for (choice, settled) in [("auto", ["r1-t1024", "r8-t1024"]), ("r4", ["r4-t1024"; 2])] {
            for (r, shape) in base.iter().zip(settled) {
                rs.push(BenchResult {
                    relax_kernel: "resident".into(),
                    resident_choice: Some(choice.into()),
                    resident_shape: Some(shape.into()),
                    unrolled: true,
                    ..r.clone()
                });
            }
        }
        assert_eq!(rs.len(), 4, "two batch sizes per choice");
        let panels = figure(&[(String::new(), rs)]);
        let step = &panels[0].series;
        let labels: Vec<&str> = step.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "resident auto",
                "resident r4",
                "backprop (fastest configuration)"
            ]
        );
        assert_eq!(step[0].points.len(), 2);
        assert_eq!(
            (step[0].colour, step[1].colour),
            (Some(6), Some(SPEC_COLOURS[0]))
        );
        assert_eq!(step[1].stroke, Stroke::Dashed);
    }

    /// Several sets (files) in one figure: each entry names its set, the stroke tells the sets
    /// apart and the colour still names the tile.
    #[test]
    fn sets_are_compared_by_name_and_stroke() {
        let old = h100();
        let new: Vec<BenchResult> = old
            .iter()
            .map(|r| BenchResult {
                unrolled: true,
                ..r.clone()
            })
            .collect();
        let panels = figure(&[("before".into(), old), ("after".into(), new)]);
        let step = &panels[0].series;
        assert_eq!(step.len(), 10, "4 + 4 configurations and 2 backprop lines");
        assert_eq!(step[0].label, "before: tiled 32x32, rolled loops");
        assert_eq!(step[4].label, "after: tiled 32x32");
        assert_eq!(
            (step[0].stroke, step[4].stroke),
            (Stroke::Solid, Stroke::Dashed)
        );
        assert_eq!((step[0].colour, step[4].colour), (Some(1), Some(1)));
        assert_eq!(step[9].label, "after: backprop (fastest configuration)");
        assert_eq!(
            set_name(Path::new("results/h100-2026-11-27/bench.jsonl")),
            "h100-2026-11-27"
        );
        assert_eq!(set_name(Path::new("/tmp/sweep.jsonl")), "sweep");
    }
}
