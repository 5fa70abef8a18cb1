//! The plots of a 1-D flow: its learned density as a curve over a density-normalised histogram
//! of the data, and a histogram of its samples against the data's. Like `plot`, everything is
//! f64 and the caller supplies log-densities and samples.

use super::plot::{write_png, DrawResult};
use anyhow::Result;
use ndarray::Array2;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;

/// Points of the density curve.
const CURVE_POINTS: usize = 500;

const DATA_COLOR: RGBColor = RGBColor(40, 90, 200);
const FLOW_COLOR: RGBColor = RGBColor(240, 120, 20);

/// The range of the finite values of every set, widened by `pad` times its width on each side;
/// [-1, 1] if there are none.
pub fn range_of(sets: &[&[f64]], pad: f64) -> Range<f64> {
    let finite = sets.iter().flat_map(|s| s.iter()).filter(|v| v.is_finite());
    let (lo, hi) =
        finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    if lo > hi {
        return -1.0..1.0;
    }
    if lo == hi {
        return lo - 1.0..hi + 1.0;
    }
    let w = hi - lo;
    lo - pad * w..hi + pad * w
}

/// Histogram bins for n values: about sqrt(n), between 10 and 80, so small sets are not all
/// noise and large ones still show shape.
pub fn bins_for(n: usize) -> usize {
    ((n as f64).sqrt().round() as usize).clamp(10, 80)
}

/// The density (count / (finite values * bin width)) of `bins` equal bins over `range`.
/// Values outside the range are counted in the total but in no bin, so the bars integrate
/// to the share of the data inside the plot, as a density would.
pub fn histogram(values: &[f64], range: &Range<f64>, bins: usize) -> Vec<f64> {
    let mut counts = vec![0usize; bins];
    let width = (range.end - range.start) / bins as f64;
    let mut total = 0usize;
    for &v in values.iter().filter(|v| v.is_finite()) {
        total += 1;
        if v < range.start || v > range.end || bins == 0 {
            continue;
        }
        let b = (((v - range.start) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let norm = if total == 0 { 0.0 } else { 1.0 / (total as f64 * width) };
    counts.iter().map(|&c| c as f64 * norm).collect()
}

/// The learned density `exp(log_density)` over `range` as a curve, on top of a histogram of
/// `data`.
pub fn density(
    range: &Range<f64>,
    log_density: &dyn Fn(&Array2<f64>) -> Vec<f64>,
    data: &[f64],
    title: &str,
    path: &Path,
) -> Result<()> {
    let step = (range.end - range.start) / (CURVE_POINTS - 1) as f64;
    let xs = Array2::from_shape_fn((CURVE_POINTS, 1), |(i, _)| range.start + i as f64 * step);
    let curve: Vec<(f64, f64)> = xs
        .iter()
        .zip(log_density(&xs))
        .map(|(&x, l)| (x, l.exp()))
        .map(|(x, d)| (x, if d.is_finite() { d } else { 0.0 }))
        .collect();
    let hist = histogram(data, range, bins_for(data.len()));
    write_png(path, |path| draw_density(range, &hist, data.len(), &curve, title, path))
}

/// Flow samples and data as two histograms over `range` (the data's as an outline). Returns
/// how many samples fell outside it.
pub fn samples(
    range: &Range<f64>,
    samples: &[f64],
    data: &[f64],
    title: &str,
    path: &Path,
) -> Result<usize> {
    let outside = samples.iter().filter(|v| !range.contains(v)).count();
    let bins = bins_for(samples.len().min(data.len()));
    let (flow_hist, data_hist) = (histogram(samples, range, bins), histogram(data, range, bins));
    let counts = (samples.len(), data.len());
    write_png(path, |path| draw_samples(range, &flow_hist, &data_hist, counts, title, path))?;
    Ok(outside)
}

/// The top of the y axis: a little above the highest finite value.
fn y_top<'a>(values: impl Iterator<Item = &'a f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, |m: f64, &v| m.max(v));
    if max > 0.0 {
        max * 1.08
    } else {
        1.0
    }
}

/// The rectangles of a histogram over `range`.
fn bars(range: &Range<f64>, hist: &[f64]) -> Vec<[(f64, f64); 2]> {
    let w = (range.end - range.start) / hist.len().max(1) as f64;
    hist.iter()
        .enumerate()
        .map(|(i, &h)| {
            let x = range.start + i as f64 * w;
            [(x, 0.0), (x + w, h)]
        })
        .collect()
}

fn draw_density(
    range: &Range<f64>,
    hist: &[f64],
    n_data: usize,
    curve: &[(f64, f64)],
    title: &str,
    path: &Path,
) -> DrawResult {
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = y_top(hist.iter().chain(curve.iter().map(|(_, d)| d)));
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: learned density, training data"), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(range.clone(), 0.0..top)?;
    chart.configure_mesh().x_desc("x").y_desc("density").draw()?;
    let fill = DATA_COLOR.mix(0.35).filled();
    chart
        .draw_series(bars(range, hist).into_iter().map(|r| Rectangle::new(r, fill)))?
        .label(format!("data ({n_data} rows, histogram)"))
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], fill));
    let red = RGBColor(200, 30, 30);
    chart
        .draw_series(LineSeries::new(curve.to_vec(), red.stroke_width(2)))?
        .label("learned density p(x)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], red.stroke_width(2)));
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

fn draw_samples(
    range: &Range<f64>,
    flow_hist: &[f64],
    data_hist: &[f64],
    (n_flow, n_data): (usize, usize),
    title: &str,
    path: &Path,
) -> DrawResult {
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = y_top(flow_hist.iter().chain(data_hist));
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: samples"), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(range.clone(), 0.0..top)?;
    chart.configure_mesh().x_desc("x").y_desc("density").draw()?;
    let fill = FLOW_COLOR.mix(0.5).filled();
    chart
        .draw_series(bars(range, flow_hist).into_iter().map(|r| Rectangle::new(r, fill)))?
        .label(format!("flow samples ({n_flow})"))
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], fill));
    // The data as an outline, so both histograms stay visible where they overlap.
    let outline: Vec<(f64, f64)> = std::iter::once((range.start, 0.0))
        .chain(bars(range, data_hist).into_iter().flat_map(|[(a, _), (b, h)]| [(a, h), (b, h)]))
        .chain(std::iter::once((range.end, 0.0)))
        .collect();
    chart
        .draw_series(LineSeries::new(outline, DATA_COLOR.stroke_width(2)))?
        .label(format!("data ({n_data} rows)"))
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 18, y)], DATA_COLOR.stroke_width(2))
        });
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_integrates_to_the_share_inside() {
        let v = [0.1, 0.2, 0.6, 0.9, 1.0, 5.0, f64::NAN];
        let h = histogram(&v, &(0.0..1.0), 2);
        // 6 finite values, bin width 0.5: bin 0 holds 2, bin 1 holds 3 (1.0 is the last edge).
        assert_eq!(h, vec![2.0 / 3.0, 1.0]);
        let mass: f64 = h.iter().map(|d| d * 0.5).sum();
        assert!((mass - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(histogram(&[], &(0.0..1.0), 3), vec![0.0; 3]);
        assert_eq!(histogram(&[-1.0], &(0.0..1.0), 2), vec![0.0; 2]);
    }

    #[test]
    fn range_and_bins() {
        assert_eq!(range_of(&[&[0.0, 2.0], &[1.0, f64::INFINITY]], 0.5), -1.0..3.0);
        assert_eq!(range_of(&[&[f64::NAN]], 0.1), -1.0..1.0);
        assert_eq!(range_of(&[&[3.0, 3.0]], 0.1), 2.0..4.0);
        assert_eq!((bins_for(0), bins_for(2500), bins_for(1_000_000)), (10, 50, 80));
    }

    #[test]
    fn bars_tile_the_range() {
        let b = bars(&(0.0..2.0), &[1.0, 3.0]);
        assert_eq!(b, vec![[(0.0, 0.0), (1.0, 1.0)], [(1.0, 0.0), (2.0, 3.0)]]);
        assert_eq!(y_top([f64::INFINITY, 2.0].iter()), 2.0 * 1.08);
        assert_eq!(y_top([].iter()), 1.0);
    }
}
