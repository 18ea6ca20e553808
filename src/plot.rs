//! PNG line charts (plotters): gradient convergence, training curves, experiment means with a
//! ±1 std band. Text needs a TrueType font; we look for a common system one at run time.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::{Error, Result};

/// One line, optionally with a shaded band (lower, upper) at each point.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub band: Option<Vec<(f64, f64)>>,
}

/// One panel of a figure.
#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_y: bool,
    pub series: Vec<Series>,
}

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

fn ensure_font() -> Result<()> {
    static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Ok(p) = std::env::var("ARELAX_FONT") {
            candidates.push(p.into());
        }
        candidates.extend(FONT_CANDIDATES.iter().map(PathBuf::from));
        for c in candidates {
            if let Ok(bytes) = std::fs::read(&c) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err("plots need a TrueType font: install fonts-dejavu-core or set ARELAX_FONT=/path/to/font.ttf".into())
    })
    .clone()
    .map_err(Error::Other)
}

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn bounds(panel: &Panel) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for s in &panel.series {
        let band = s.band.iter().flatten().flat_map(|&(a, b)| [a, b]);
        let ys = s.points.iter().map(|p| p.1).chain(band);
        for y in ys.filter(|y| y.is_finite() && (!panel.log_y || *y > 0.0)) {
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        for p in &s.points {
            x0 = x0.min(p.0);
            x1 = x1.max(p.0);
        }
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if x0 == x1 {
        x1 = x0 + 1.0;
    }
    if y0 > y1 {
        (y0, y1) = (if panel.log_y { 1e-6 } else { 0.0 }, 1.0);
    }
    if panel.log_y {
        (x0, x1, y0 / 2.0, y1 * 2.0)
    } else {
        let pad = ((y1 - y0) * 0.05).max(1e-9);
        (x0, x1, y0 - pad, y1 + pad)
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let (x0, x1, y0, y1) = bounds(panel);
    // Epochs and step counts are integers: label only whole ticks then.
    let integer_x = panel
        .series
        .iter()
        .all(|s| s.points.iter().all(|p| p.0.fract() == 0.0));
    let x_tick = move |v: &f64| {
        if integer_x && v.fract() != 0.0 {
            String::new()
        } else {
            tick(*v)
        }
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_label_formatter(&x_tick)
                .y_label_formatter(&|v: &f64| tick(*v))
                .x_desc(panel.x_label.as_str())
                .y_desc(panel.y_label.as_str())
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in panel.series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                if let Some(band) = &s.band {
                    let upper = s.points.iter().zip(band).map(|(p, b)| (p.0, b.1));
                    let lower = s.points.iter().zip(band).rev().map(|(p, b)| (p.0, b.0));
                    let poly: Vec<(f64, f64)> = upper.chain(lower).collect();
                    chart
                        .draw_series(std::iter::once(Polygon::new(poly, color.mix(0.2).filled())))
                        .map_err(|e| e.to_string())?;
                }
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|p| p.1.is_finite() && (!panel.log_y || p.1 > 0.0))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| e.to_string())?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(SeriesLabelPosition::LowerLeft)
                .draw()
                .map_err(|e| e.to_string())?;
        }};
    }
    if panel.log_y {
        finish!(
            builder
                .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                .map_err(|e| e.to_string())?
        );
    } else {
        finish!(
            builder
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| e.to_string())?
        );
    }
    Ok(())
}

/// A short tick label: integers plainly, small or large numbers in scientific notation.
fn tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else if (v - v.round()).abs() < 1e-9 * a.max(1.0) {
        format!("{}", v.round())
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Draws panels side by side into a PNG at `path`, atomically (temporary file, then rename).
pub fn save_png(path: &Path, panels: &[Panel]) -> Result<()> {
    ensure_font()?;
    if let Some(d) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| Error::file(d, e))?;
    }
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file path"))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp{}.png", std::process::id()));
    let width = 640 * panels.len().max(1) as u32;
    let draw = || -> std::result::Result<(), String> {
        let root = BitMapBackend::new(&tmp, (width, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel)?;
        }
        root.present().map_err(|e| e.to_string())?;
        Ok(())
    };
    draw().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::file(path, format!("drawing the plot failed: {e}"))
    })?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, e))
}
