//! PNG plots of the evaluation (TPR against length, ROC curves), drawn with plotters.

use plotters::prelude::*;

use super::EvalReport;

/// Errors while drawing.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// No usable font (plotters draws text with a TTF file from the system).
    #[error("no TrueType font found (looked for {0})")]
    NoFont(String),
    /// Drawing or encoding failed.
    #[error("plot: {0}")]
    Draw(String),
}

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
];

fn register_font() -> Result<(), PlotError> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        for f in FONTS {
            if let Ok(bytes) = std::fs::read(f) {
                // plotters keeps fonts for the life of the program.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::NoFont(FONTS.join(", ")))
    }
}

fn e<E: std::fmt::Display>(err: E) -> PlotError {
    PlotError::Draw(err.to_string())
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

const W: u32 = 900;
const H: u32 = 600;

/// Encode an RGB buffer as PNG bytes.
fn png_bytes(rgb: &[u8]) -> Result<Vec<u8>, PlotError> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, W, H);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(e)?;
    w.write_image_data(rgb).map_err(e)?;
    w.finish().map_err(e)?;
    Ok(out)
}

/// TPR against the number of tokens, per scheme, at the nominal alpha and at the empirical FPR
/// (PNG bytes).
pub fn tpr_vs_length(r: &EvalReport) -> Result<Vec<u8>, PlotError> {
    register_font()?;
    let mut buf = vec![0u8; (W * H * 3) as usize];
    draw_tpr(r, &mut buf)?;
    png_bytes(&buf)
}

fn draw_tpr(r: &EvalReport, buf: &mut [u8]) -> Result<(), PlotError> {
    let root = BitMapBackend::with_buffer(buf, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let max_t = r.tokens as f64 * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Detection rate vs. length (SmolLM2-135M, T=1 multinomial)",
            ("sans-serif", 24),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..max_t, 0f64..1.02f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("generated tokens T")
        .y_desc("true-positive rate")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(e)?;
    let mut c = 0;
    for s in &r.schemes {
        for (which, dashed) in [("alpha", false), ("emp", true)] {
            let color = COLORS[c % COLORS.len()];
            c += 1;
            let pts: Vec<(f64, f64)> = s
                .by_length
                .iter()
                .filter_map(|p| {
                    let t: f64 = p.condition.trim_start_matches("T=").parse().ok()?;
                    Some((
                        t,
                        if which == "alpha" {
                            p.tpr_alpha
                        } else {
                            p.tpr_empirical
                        },
                    ))
                })
                .collect();
            let label = if which == "alpha" {
                format!("{}: p ≤ {:e}", s.scheme, r.alpha)
            } else {
                format!("{}: empirical FPR ≤ {}%", s.scheme, r.empirical_fpr * 100.0)
            };
            let style = ShapeStyle::from(&color).stroke_width(if dashed { 2 } else { 3 });
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(e)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(e)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

/// ROC curves (log FPR axis) per scheme at the shortest, 50-token and full lengths (PNG bytes).
pub fn roc_curves(r: &EvalReport) -> Result<Vec<u8>, PlotError> {
    register_font()?;
    let mut buf = vec![0u8; (W * H * 3) as usize];
    draw_roc(r, &mut buf)?;
    png_bytes(&buf)
}

fn draw_roc(r: &EvalReport, buf: &mut [u8]) -> Result<(), PlotError> {
    let root = BitMapBackend::with_buffer(buf, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let floor = 1e-3;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "ROC: watermarked vs. unwatermarked generations",
            ("sans-serif", 24),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((floor..1f64).log_scale(), 0f64..1.02f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("false-positive rate (log scale)")
        .y_desc("true-positive rate")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(e)?;
    let mut c = 0;
    for s in &r.schemes {
        for (t, curve) in &s.roc {
            if *t != 50 && *t != r.tokens && *t != 25 {
                continue;
            }
            let color = COLORS[c % COLORS.len()];
            c += 1;
            let pts: Vec<(f64, f64)> = curve.iter().map(|&(f, tp)| (f.max(floor), tp)).collect();
            let style = ShapeStyle::from(&color).stroke_width(2);
            chart
                .draw_series(LineSeries::new(pts, style))
                .map_err(e)?
                .label(format!("{} T={t}", s.scheme))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

/// One series of a calibration plot: a label and its p-values under a null.
pub type CalibrationSeries = (String, Vec<f64>);

/// Calibration of p-values under a null: the fraction of p-values at or below α against α,
/// both on log axes from `floor` to 1, with the diagonal a valid test must stay under (PNG
/// bytes).
pub fn calibration(
    title: &str,
    series: &[CalibrationSeries],
    floor: f64,
) -> Result<Vec<u8>, PlotError> {
    register_font()?;
    let mut buf = vec![0u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d((floor..1f64).log_scale(), (floor..1f64).log_scale())
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("α (log scale)")
            .y_desc("fraction of null pairs with p ≤ α")
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(e)?;
        let diag = ShapeStyle::from(&BLACK).stroke_width(1);
        chart
            .draw_series(LineSeries::new(vec![(floor, floor), (1.0, 1.0)], diag))
            .map_err(e)?
            .label("rate = α (a valid test stays on or below)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], diag));
        // α on a log grid; a rate of 0 is drawn at the floor (off the chart's lower edge).
        let grid: Vec<f64> = (0..=60)
            .map(|i| floor * (1.0 / floor).powf(i as f64 / 60.0))
            .collect();
        for (c, (label, ps)) in series.iter().enumerate() {
            let color = COLORS[c % COLORS.len()];
            let n = ps.len().max(1) as f64;
            let pts: Vec<(f64, f64)> = grid
                .iter()
                .map(|&a| {
                    let r = ps.iter().filter(|&&p| p <= a).count() as f64 / n;
                    (a, r.max(floor))
                })
                .collect();
            let style = ShapeStyle::from(&color).stroke_width(2);
            chart
                .draw_series(LineSeries::new(pts, style))
                .map_err(e)?
                .label(format!("{label} ({} pairs)", ps.len()))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    png_bytes(&buf)
}
