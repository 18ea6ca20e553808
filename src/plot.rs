//! PNG line charts (plotters): gradient convergence, training curves, experiment means with a
//! ±1 std band. Text needs a TrueType font; we look for a common system one at run time.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::{Error, Result};

/// One line, optionally with a shaded band (lower, upper) at each point.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub band: Option<Vec<(f64, f64)>>,
    pub stroke: Stroke,
    /// An index into the palette; None takes the series' position (so a figure can give
    /// related lines one colour and tell them apart by stroke).
    pub colour: Option<usize>,
}

/// How a series' line is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stroke {
    #[default]
    Solid,
    Dashed,
    /// Short dashes.
    Dotted,
}

impl Stroke {
    /// Dash and gap lengths in pixels; None for a solid line.
    fn dashes(self) -> Option<(u32, u32)> {
        match self {
            Stroke::Solid => None,
            Stroke::Dashed => Some((7, 4)),
            Stroke::Dotted => Some((2, 3)),
        }
    }
}

impl Series {
    /// A solid line in the series' own colour, without a band.
    pub fn line(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
            band: None,
            stroke: Stroke::Solid,
            colour: None,
        }
    }
}

/// One panel of a figure.
#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// A logarithmic x axis, ticked at the data's x values (batch sizes, say).
    pub log_x: bool,
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

/// Whether plots can be drawn here (a TrueType font was found), so a long job that ends in a
/// plot can say so before it starts.
pub fn ensure_font() -> Result<()> {
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

const COLORS: [RGBColor; 16] = [
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
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
    RGBColor(0, 128, 128),
    RGBColor(0, 0, 0),
    RGBColor(230, 171, 2),
    RGBColor(200, 0, 200),
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
        x1 = if panel.log_x { x0 * 2.0 } else { x0 + 1.0 };
    }
    if y0 > y1 {
        (y0, y1) = (if panel.log_y { 1e-6 } else { 0.0 }, 1.0);
    }
    if panel.log_x {
        // A margin of a fifth of a doubling either side, so end points are not on the frame.
        (x0, x1) = (x0 / 1.15, x1 * 1.15);
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
    legend: bool,
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
                let color = colour_of(s, i);
                if let Some(band) = &s.band {
                    let upper = s.points.iter().zip(band).map(|(p, b)| (p.0, b.1));
                    let lower = s.points.iter().zip(band).rev().map(|(p, b)| (p.0, b.0));
                    let poly: Vec<(f64, f64)> = upper.chain(lower).collect();
                    chart
                        .draw_series(std::iter::once(Polygon::new(poly, color.mix(0.2).filled())))
                        .map_err(|e| e.to_string())?;
                }
                let pts = drawable(panel, s);
                let style = color.stroke_width(2);
                if let Some((size, gap)) = s.stroke.dashes() {
                    chart
                        .draw_series(DashedLineSeries::new(pts.clone(), size, gap, style))
                        .map_err(|e| e.to_string())?
                        .label(s.label.as_str())
                        .legend(move |(x, y)| {
                            DashedPathElement::new(vec![(x, y), (x + 20, y)], size, gap, style)
                        });
                } else {
                    chart
                        .draw_series(LineSeries::new(pts.clone(), style))
                        .map_err(|e| e.to_string())?
                        .label(s.label.as_str())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                }
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| e.to_string())?;
            }
            if legend {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 14))
                    .position(legend_corner(panel, (x0, x1, y0, y1)))
                    .draw()
                    .map_err(|e| e.to_string())?;
            }
        }};
    }
    // Four coordinate types, one per combination of axis scales.
    let x_keys = x_values(panel);
    let y_keys = || log_ticks(y0, y1);
    match (panel.log_x, panel.log_y) {
        (false, false) => finish!(
            builder
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| e.to_string())?
        ),
        (false, true) => finish!(
            builder
                .build_cartesian_2d(x0..x1, (y0..y1).log_scale().with_key_points(y_keys()))
                .map_err(|e| e.to_string())?
        ),
        (true, false) => finish!(
            builder
                .build_cartesian_2d((x0..x1).log_scale().with_key_points(x_keys), y0..y1)
                .map_err(|e| e.to_string())?
        ),
        (true, true) => finish!(
            builder
                .build_cartesian_2d(
                    (x0..x1).log_scale().with_key_points(x_keys),
                    (y0..y1).log_scale().with_key_points(y_keys())
                )
                .map_err(|e| e.to_string())?
        ),
    }
    Ok(())
}

/// A series' colour: its own palette entry, else the one of its position in the panel.
fn colour_of(s: &Series, position: usize) -> RGBColor {
    COLORS[s.colour.unwrap_or(position) % COLORS.len()]
}

/// The points of a series that can be drawn: finite, and positive on a logarithmic y axis.
fn drawable(panel: &Panel, s: &Series) -> Vec<(f64, f64)> {
    let ok = |y: f64| y.is_finite() && (!panel.log_y || y > 0.0);
    s.points.iter().copied().filter(|p| ok(p.1)).collect()
}

/// The distinct x values of a panel's points, ascending (the ticks of a logarithmic x axis).
fn x_values(panel: &Panel) -> Vec<f64> {
    let mut xs: Vec<f64> = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs
}

/// Ticks of a logarithmic axis over [lo, hi]: 1, 2, 5 times each power of ten over at most four
/// decades, else the powers of ten alone (thinned to about ten).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return Vec::new();
    }
    let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let decades = e1 - e0;
    let mantissas: &[f64] = if decades <= 4 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let every = (decades / 10 + 1).max(1);
    (e0..=e1)
        .filter(|e| mantissas.len() > 1 || (e - e0) % every == 0)
        .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
        .filter(|v| (lo..=hi).contains(v))
        .collect()
}

/// The corner of the plot area with the fewest data points under where the legend goes (a box
/// of 45% × 40% of the area) or along the lines between them; the lower left wins ties.
fn legend_corner(panel: &Panel, (x0, x1, y0, y1): (f64, f64, f64, f64)) -> SeriesLabelPosition {
    let scale = |v: f64, a: f64, b: f64, log: bool| {
        if log {
            (v.ln() - a.ln()) / (b.ln() - a.ln())
        } else {
            (v - a) / (b - a)
        }
    };
    // Points along every line (eight per segment), in the plot area's unit square.
    let mut at: Vec<(f64, f64)> = Vec::new();
    for s in &panel.series {
        let pts: Vec<(f64, f64)> = drawable(panel, s)
            .into_iter()
            .map(|p| {
                (
                    scale(p.0, x0, x1, panel.log_x),
                    scale(p.1, y0, y1, panel.log_y),
                )
            })
            .collect();
        at.extend(pts.first());
        for w in pts.windows(2) {
            let (a, b) = (w[0], w[1]);
            at.extend((1..=8).map(|i| {
                let t = i as f64 / 8.0;
                (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1))
            }));
        }
    }
    let count = |left: bool, lower: bool| {
        at.iter()
            .filter(|(x, y)| {
                (if left { *x <= 0.45 } else { *x >= 0.55 })
                    && (if lower { *y <= 0.4 } else { *y >= 0.6 })
            })
            .count()
    };
    [
        (SeriesLabelPosition::LowerLeft, count(true, true)),
        (SeriesLabelPosition::UpperLeft, count(true, false)),
        (SeriesLabelPosition::LowerRight, count(false, true)),
        (SeriesLabelPosition::UpperRight, count(false, false)),
    ]
    .into_iter()
    .min_by_key(|c| c.1)
    .map(|c| c.0)
    .expect("four corners")
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

/// Where a figure's legend goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Legend {
    /// Each panel's own, in its emptiest corner.
    InEachPanel,
    /// One strip below all panels, listing every label once (for many lines, or panels that
    /// share their lines).
    SharedBelow,
}

/// Draws panels side by side into a PNG at `path`, each with its own legend.
pub fn save_png(path: &Path, panels: &[Panel]) -> Result<()> {
    save_png_with(path, panels, Legend::InEachPanel)
}

/// The legend strip's columns and the height of one entry, in pixels.
const LEGEND_COLUMNS: usize = 2;
const LEGEND_ROW: i32 = 22;

/// Draws panels side by side into a PNG at `path`, atomically (temporary file, then rename).
pub fn save_png_with(path: &Path, panels: &[Panel], legend: Legend) -> Result<()> {
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
    let entries = if legend == Legend::SharedBelow {
        legend_entries(panels)
    } else {
        Vec::new()
    };
    let rows = entries.len().div_ceil(LEGEND_COLUMNS) as i32;
    let strip = if entries.is_empty() {
        0
    } else {
        16 + rows * LEGEND_ROW
    };
    let draw = || -> std::result::Result<(), String> {
        let root = BitMapBackend::new(&tmp, (width, 480 + strip as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (charts, below) = root.split_vertically(480);
        let areas = charts.split_evenly((1, panels.len().max(1)));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel, legend == Legend::InEachPanel)?;
        }
        let column = width as i32 / LEGEND_COLUMNS as i32;
        for (i, (label, colour, stroke)) in entries.iter().enumerate() {
            // Column-major, so that the lines read down each column in order.
            let x = 80 + (i as i32 / rows) * column;
            let y = 8 + (i as i32 % rows) * LEGEND_ROW + LEGEND_ROW / 2;
            let style = colour.stroke_width(2);
            let line = vec![(x, y), (x + 28, y)];
            match stroke.dashes() {
                None => below.draw(&PathElement::new(line, style)),
                Some((size, gap)) => below.draw(&DashedPathElement::new(line, size, gap, style)),
            }
            .map_err(|e| e.to_string())?;
            below
                .draw(&Text::new(
                    label.clone(),
                    (x + 38, y - 8),
                    ("sans-serif", 14),
                ))
                .map_err(|e| e.to_string())?;
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

/// Every label of the panels once, in order, with the colour and stroke it is drawn in.
fn legend_entries(panels: &[Panel]) -> Vec<(String, RGBColor, Stroke)> {
    let mut out: Vec<(String, RGBColor, Stroke)> = Vec::new();
    for panel in panels {
        for (i, s) in panel.series.iter().enumerate() {
            if !out.iter().any(|e| e.0 == s.label) {
                out.push((s.label.clone(), colour_of(s, i), s.stroke));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_are_1_2_5_over_few_decades_else_powers_of_ten() {
        assert_eq!(log_ticks(15.0, 700.0), [20.0, 50.0, 100.0, 200.0, 500.0]);
        let wide = log_ticks(1e-7, 1.0);
        assert_eq!(wide.len(), 8);
        assert!(
            wide.iter()
                .zip(-7..=0)
                .all(|(t, e)| (t / 10f64.powi(e) - 1.0).abs() < 1e-12)
        );
        assert!(log_ticks(0.0, 1.0).is_empty());
    }

    #[test]
    fn the_legend_avoids_the_lines() {
        let panel = |points: Vec<(f64, f64)>| Panel {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            log_x: false,
            log_y: false,
            series: vec![Series::line("a", points)],
        };
        // A line along the bottom: the legend goes to the top left.
        let low = panel(vec![(0.0, 0.0), (10.0, 0.1), (20.0, 0.0)]);
        let b = (0.0, 20.0, 0.0, 1.0);
        assert_eq!(legend_corner(&low, b), SeriesLabelPosition::UpperLeft);
        // A rising line through the lower left and upper right, with end points only in
        // between: the segments count, so the lower left is not free.
        let rising = panel(vec![(0.0, 0.0), (20.0, 1.0)]);
        let corner = legend_corner(&rising, b);
        assert!(
            corner == SeriesLabelPosition::UpperLeft || corner == SeriesLabelPosition::LowerRight,
            "{corner:?}"
        );
    }
}
