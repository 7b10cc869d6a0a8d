//! The loss-curve figure: per family, the evaluation loss of every model against the step, and
//! the unigram entropy of the text (the best context-free loss) as a horizontal line.

use plotters::prelude::*;

use crate::{KitError, Origin, TrainedSet};

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
];

fn register_font() -> Result<(), KitError> {
    for f in FONTS {
        if let Ok(bytes) = std::fs::read(f) {
            // plotters keeps fonts for the life of the program.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
    }
    Err(KitError::Bad(format!(
        "no TrueType font found (looked for {})",
        FONTS.join(", ")
    )))
}

fn e<E: std::fmt::Display>(err: E) -> KitError {
    KitError::Bad(format!("plot: {err}"))
}

const W: u32 = 1200;
const H: u32 = 520;

/// PNG bytes of the loss curves of `set`.
pub fn loss_curves(set: &TrainedSet) -> Result<Vec<u8>, KitError> {
    register_font()?;
    let mut buf = vec![0u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let panels = root.split_evenly((1, set.families.len().max(1)));
        for (fam, area) in set.families.iter().zip(panels) {
            let fc = set
                .config
                .families
                .iter()
                .find(|c| c.family == fam.family)
                .ok_or_else(|| KitError::Bad("family without a recipe".into()))?;
            let x_max = (fc.steps + fc.child_steps) as f64;
            let y_max = fam
                .models
                .iter()
                .flat_map(|m| m.eval_curve.iter().map(|p| p.1))
                .fold(fam.unigram_entropy, f64::max)
                * 1.05;
            let mut chart = ChartBuilder::on(&area)
                .caption(
                    format!(
                        "{}-like, hidden {}, {} layers (eval loss, nats)",
                        fam.family.name(),
                        fc.shape.hidden,
                        fc.shape.layers
                    ),
                    ("sans-serif", 20),
                )
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..x_max, 0f64..y_max)
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_desc("step (children continue after the parent's last step)")
                .y_desc("loss")
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(e)?;
            let uni = fam.unigram_entropy;
            chart
                .draw_series(LineSeries::new(
                    vec![(0.0, uni), (x_max, uni)],
                    BLACK.stroke_width(2),
                ))
                .map_err(e)?
                .label(format!("unigram entropy {uni:.2}"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
            let mut labelled = [false; 3];
            for m in &fam.models {
                let (color, offset, slot, label) = match m.origin {
                    Origin::Independent => (RGBColor(31, 119, 180), 0, 0, "independent seeds"),
                    Origin::Continued => (RGBColor(214, 39, 40), fc.steps, 1, "seed 0, continued"),
                    Origin::FineTuned => (RGBColor(44, 160, 44), fc.steps, 2, "seed 0, fine-tuned"),
                };
                let pts: Vec<(f64, f64)> = m
                    .eval_curve
                    .iter()
                    .map(|&(s, l)| ((s + offset) as f64, l))
                    .collect();
                let series = chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(e)?;
                if !labelled[slot] {
                    labelled[slot] = true;
                    series
                        .label(label)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()
                .map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    encode(&buf, W, H)
}

fn encode(buf: &[u8], w: u32, h: u32) -> Result<Vec<u8>, KitError> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(e)?;
    w.write_image_data(buf).map_err(e)?;
    w.finish().map_err(e)?;
    Ok(out)
}

/// PNG bytes of a score-distribution figure: one strip per population (`(label, scores)`),
/// every score a point (jittered vertically inside its strip, deterministically), the match
/// threshold and the start of the undecided band as vertical lines.
pub fn score_strips(
    groups: &[(String, Vec<f32>)],
    match_score: f32,
    undecided: f32,
) -> Result<Vec<u8>, KitError> {
    register_font()?;
    let (w, h) = (1200u32, 120 + 70 * groups.len() as u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let lo = groups
            .iter()
            .flat_map(|g| g.1.iter().copied())
            .filter(|s| s.is_finite())
            .fold(undecided, f32::min) as f64;
        let x0 = (lo - 0.05).max(-1.0);
        let n = groups.len();
        let names: Vec<String> = groups
            .iter()
            .map(|g| format!("{} ({})", g.0, g.1.len()))
            .collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "symmetry-invariant line: score per pair (registered model, suspect)",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(330)
            .build_cartesian_2d(x0..1.005f64, -0.5f64..(n as f64 - 0.5))
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("score (median over registered matrices of the best sketch correlation)")
            .y_labels(n.max(1))
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                    names[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e)?;
        for (x, color, label) in [
            (match_score as f64, RED, format!("match from {match_score}")),
            (
                undecided as f64,
                RGBColor(255, 140, 0),
                format!("undecided from {undecided}"),
            ),
        ] {
            chart
                .draw_series(LineSeries::new(
                    vec![(x, -0.5), (x, n as f64 - 0.5)],
                    color.stroke_width(2),
                ))
                .map_err(e)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        for (i, g) in groups.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts =
                g.1.iter()
                    .enumerate()
                    .filter(|(_, s)| s.is_finite())
                    .map(|(k, &s)| {
                        // Golden-ratio jitter: spread, reproducible, no generator needed.
                        let j = ((k as f64 * 0.618_034).fract() - 0.5) * 0.6;
                        Circle::new((s as f64, i as f64 + j), 2, color.filled())
                    });
            chart.draw_series(pts).map_err(e)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    encode(&buf, w, h)
}
