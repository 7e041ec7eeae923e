//! The heat map `amalgam layers --out` draws: span start × span length, coloured by how
//! much the span changes the hidden state, the least-changing span of each length
//! outlined, as SVG and PNG. The PNG's text is drawn with
//! a font bundled in the binary (DejaVu Sans Mono, Bitstream Vera licence, beside it in
//! `assets/`), so no system font is needed.

use std::path::{Path, PathBuf};

use amalgam_llama::redundancy::Changes;
use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSansMono.ttf");
const FAMILY: &str = "amalgam-mono";

/// Draws the map to `PREFIX.svg` and `PREFIX.png`; returns both paths.
pub fn draw(
    changes: &Changes,
    max_span: usize,
    title: &str,
    prefix: &Path,
) -> Result<[PathBuf; 2]> {
    register_font(FAMILY, FontStyle::Normal, FONT)
        .map_err(|_| anyhow!("the bundled font does not load"))?;
    let size = (
        (160 + 22 * changes.layers()).clamp(480, 2400) as u32,
        (140 + 26 * max_span).clamp(320, 1200) as u32,
    );
    let (svg, png) = (prefix.with_extension("svg"), prefix.with_extension("png"));
    plot(SVGBackend::new(&svg, size).into_drawing_area(), changes, max_span, title)?;
    plot(BitMapBackend::new(&png, size).into_drawing_area(), changes, max_span, title)?;
    Ok([svg, png])
}

fn plot<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    changes: &Changes,
    max_span: usize,
    title: &str,
) -> Result<()> {
    let failed = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the heat map: {e}");
    root.fill(&WHITE).map_err(failed)?;
    let layers = changes.layers();
    let highest = (1..=max_span)
        .flat_map(|len| (0..layers).map(move |s| (s, len)))
        .map(|(s, len)| changes.span(s, len))
        .filter(|v| v.is_finite())
        .fold(0f64, f64::max)
        .max(1e-9);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0..layers as i32, 1..max_span as i32 + 1)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("first layer of the span")
        .y_desc("span length")
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .x_labels(layers.min(40))
        .y_labels(max_span)
        .draw()
        .map_err(failed)?;
    let cells = (1..=max_span).flat_map(|len| (0..layers).map(move |s| (s, len)));
    chart
        .draw_series(cells.filter_map(|(s, len)| {
            let v = changes.span(s, len);
            v.is_finite().then(|| {
                let (x, y) = (s as i32, len as i32);
                Rectangle::new([(x, y), (x + 1, y + 1)], shade((v / highest).sqrt()).filled())
            })
        }))
        .map_err(failed)?;
    // The least-changing span of each length, outlined.
    let best = (1..=max_span).filter_map(|len| changes.least_changing(len).map(|(s, _)| (s, len)));
    chart
        .draw_series(best.map(|(s, len)| {
            let (x, y) = (s as i32, len as i32);
            Rectangle::new([(x, y), (x + 1, y + 1)], WHITE.stroke_width(2))
        }))
        .map_err(failed)?;
    root.present().map_err(failed)?;
    Ok(())
}

/// Dark blue (no change: redundant) through teal to yellow (the most change); the
/// square root of the share of the largest change, to spread the small ones.
fn shade(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let stops = [(0.0, (22, 28, 92)), (0.5, (33, 145, 140)), (1.0, (253, 231, 37))];
    let (a, b) = if t < 0.5 { (stops[0], stops[1]) } else { (stops[1], stops[2]) };
    let f = (t - a.0) / (b.0 - a.0);
    let mix = |x: u8, y: u8| (f64::from(x) + f * (f64::from(y) - f64::from(x))).round() as u8;
    RGBColor(mix(a.1.0, b.1.0), mix(a.1.1, b.1.1), mix(a.1.2, b.1.2))
}
