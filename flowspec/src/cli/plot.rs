//! The PNGs `flowspec train` writes: the learning curve, the learned density of a 2-D flow as
//! a heat map, and flow samples against data (1-D flows: see `plot1d`). Everything here is f64
//! and knows nothing of flows; the caller supplies log-densities and samples.

use anyhow::{anyhow, ensure, Result};
use flowspec_runtime::train::CurvePoint;
use ndarray::{Array2, ArrayView2};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

/// Plotters draws text only with a registered font; one is embedded so plots never depend on
/// the fonts installed on the machine.
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Heat map cells per axis.
const GRID: usize = 200;

pub(super) type DrawResult = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    ensure!(ok, "the embedded plot font could not be loaded");
    Ok(())
}

/// Runs a drawing function and names the file in any error it returns.
pub(super) fn write_png(path: &Path, draw: impl FnOnce(&Path) -> DrawResult) -> Result<()> {
    ensure_font()?;
    draw(path).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

/// The rectangle a plot shows, in data coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct Bounds {
    pub x: Range<f64>,
    pub y: Range<f64>,
}

impl Bounds {
    /// The bounding box of the finite points (first two columns) of every set, widened by
    /// `pad` times its size on each side; the unit square around 0 if there are none.
    pub fn of(sets: &[ArrayView2<f64>], pad: f64) -> Bounds {
        let mut lo = [f64::INFINITY; 2];
        let mut hi = [f64::NEG_INFINITY; 2];
        for row in sets.iter().flat_map(|s| s.rows()) {
            if row.len() >= 2 && row[0].is_finite() && row[1].is_finite() {
                for k in 0..2 {
                    lo[k] = lo[k].min(row[k]);
                    hi[k] = hi[k].max(row[k]);
                }
            }
        }
        let axis = |k: usize| {
            if lo[k] > hi[k] {
                return -1.0..1.0;
            }
            let w = (hi[k] - lo[k]).max(1e-6);
            lo[k] - pad * w..hi[k] + pad * w
        };
        Bounds { x: axis(0), y: axis(1) }
    }

    fn contains(&self, x: f64, y: f64) -> bool {
        self.x.contains(&x) && self.y.contains(&y)
    }
}

/// Train and validation NLL against the step.
pub fn loss_curve(curve: &[CurvePoint], title: &str, path: &Path) -> Result<()> {
    write_png(path, |path| draw_loss(curve, title, path))
}

fn draw_loss(curve: &[CurvePoint], title: &str, path: &Path) -> DrawResult {
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let finite = |v: &f64| v.is_finite();
    let ys: Vec<f64> = curve.iter().flat_map(|c| [c.train_nll, c.val_nll]).filter(finite).collect();
    let (lo, hi) =
        ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let last = curve.last().map_or(1, |c| c.step.max(1)) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: negative log-likelihood"), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0.0..last, lo - pad..hi + pad)?;
    chart.configure_mesh().x_desc("step").y_desc("NLL (nats)").draw()?;
    let series = [("train (running mean)", BLUE, true), ("validation", RED, false)];
    for (label, color, is_train) in series {
        let pick = |c: &CurvePoint| if is_train { c.train_nll } else { c.val_nll };
        let pts: Vec<(f64, f64)> =
            curve.iter().map(|c| (c.step as f64, pick(c))).filter(|p| p.1.is_finite()).collect();
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        chart.draw_series(LineSeries::new(pts, color.stroke_width(2)))?.label(label).legend(
            move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)),
        );
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The learned density `exp(log_density)` over `bounds` as a heat map with a colour bar, and
/// `points` (the test data) drawn small on top.
pub fn density(
    bounds: &Bounds,
    log_density: &dyn Fn(&Array2<f64>) -> Vec<f64>,
    points: ArrayView2<f64>,
    title: &str,
    path: &Path,
) -> Result<()> {
    let cells = grid_centers(bounds);
    let dens: Vec<f64> = log_density(&cells)
        .into_iter()
        .map(|l| if l.is_finite() { l.exp() } else { 0.0 })
        .collect();
    // A NaN or overflowing cell must not wash out the scale (or the whole map).
    let max = dens.iter().copied().filter(|d| d.is_finite()).fold(0.0, f64::max);
    write_png(path, |path| draw_density(bounds, &cells, &dens, max, points, title, path))
}

/// The centers of a GRID x GRID grid over `b`, one row per cell.
fn grid_centers(b: &Bounds) -> Array2<f64> {
    let (dx, dy) = ((b.x.end - b.x.start) / GRID as f64, (b.y.end - b.y.start) / GRID as f64);
    Array2::from_shape_fn((GRID * GRID, 2), |(r, k)| {
        let (i, j) = (r % GRID, r / GRID);
        if k == 0 {
            b.x.start + (i as f64 + 0.5) * dx
        } else {
            b.y.start + (j as f64 + 0.5) * dy
        }
    })
}

fn draw_density(
    b: &Bounds,
    cells: &Array2<f64>,
    dens: &[f64],
    max: f64,
    points: ArrayView2<f64>,
    title: &str,
    path: &Path,
) -> DrawResult {
    let root = BitMapBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (main, side) = root.split_horizontally(790);
    let mut chart = ChartBuilder::on(&main)
        .caption(format!("{title}: learned density, test data on top"), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(b.x.clone(), b.y.clone())?;
    chart.configure_mesh().disable_mesh().x_desc("x[0]").y_desc("x[1]").draw()?;
    let (hx, hy) =
        ((b.x.end - b.x.start) / GRID as f64 / 2.0, (b.y.end - b.y.start) / GRID as f64 / 2.0);
    let scale = if max > 0.0 { 1.0 / max } else { 0.0 };
    chart.draw_series(cells.rows().into_iter().zip(dens).map(|(c, &d)| {
        let corners = [(c[0] - hx, c[1] - hy), (c[0] + hx, c[1] + hy)];
        Rectangle::new(corners, viridis(d * scale).filled())
    }))?;
    let inside = points.rows().into_iter().filter(|p| p.len() >= 2 && b.contains(p[0], p[1]));
    chart.draw_series(inside.map(|p| Circle::new((p[0], p[1]), 1, WHITE.mix(0.45).filled())))?;
    draw_colorbar(&side, max)?;
    root.present()?;
    Ok(())
}

/// A vertical colour bar from 0 to `max` density.
fn draw_colorbar<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    max: f64,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let top = if max > 0.0 { max } else { 1.0 };
    let mut bar = ChartBuilder::on(area)
        .margin_top(50)
        .margin_bottom(55)
        .margin_right(5)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..1.0, 0.0..top)
        .map_err(|e| e.to_string())?;
    bar.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc("p(x)")
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .map_err(|e| e.to_string())?;
    let steps = 100;
    let strip = (0..steps).map(|i| {
        let (a, b) = (i as f64 / steps as f64, (i + 1) as f64 / steps as f64);
        Rectangle::new([(0.0, a * top), (1.0, b * top)], viridis((a + b) / 2.0).filled())
    });
    bar.draw_series(strip).map_err(|e| e.to_string())?;
    Ok(())
}

/// Flow samples and data points over `bounds`, two colours and a legend. Returns how many
/// samples fell outside the plotted area (a sign of heavy tails or a diverged flow).
pub fn samples(
    bounds: &Bounds,
    samples: ArrayView2<f64>,
    data: ArrayView2<f64>,
    title: &str,
    path: &Path,
) -> Result<usize> {
    let inside = |s: &ArrayView2<f64>| -> Vec<(f64, f64)> {
        s.rows()
            .into_iter()
            .filter(|p| p.len() >= 2 && bounds.contains(p[0], p[1]))
            .map(|p| (p[0], p[1]))
            .collect()
    };
    let (flow_pts, data_pts) = (inside(&samples), inside(&data));
    let outside = samples.nrows() - flow_pts.len();
    write_png(path, |path| draw_samples(bounds, &flow_pts, &data_pts, title, path))?;
    Ok(outside)
}

fn draw_samples(
    b: &Bounds,
    flow_pts: &[(f64, f64)],
    data_pts: &[(f64, f64)],
    title: &str,
    path: &Path,
) -> DrawResult {
    let root = BitMapBackend::new(path, (800, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: samples"), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(b.x.clone(), b.y.clone())?;
    chart.configure_mesh().x_desc("x[0]").y_desc("x[1]").draw()?;
    let data_color = RGBColor(40, 90, 200);
    let flow_color = RGBColor(240, 120, 20);
    let sets = [
        (format!("data ({})", data_pts.len()), data_pts, data_color),
        (format!("flow samples ({})", flow_pts.len()), flow_pts, flow_color),
    ];
    for (label, pts, color) in sets {
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 2, color.mix(0.5).filled())))?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The viridis colour map at `t` in [0, 1] (clamped), linear between nine anchors.
fn viridis(t: f64) -> RGBColor {
    const ANCHORS: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let pos = t * (ANCHORS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(ANCHORS.len() - 2);
    let f = pos - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + f * (b as f64 - a as f64)).round() as u8;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn bounds_ignore_non_finite_points_and_pad() {
        let a = array![[0.0, 1.0], [2.0, 3.0], [f64::NAN, 100.0]];
        let b = Bounds::of(&[a.view()], 0.5);
        assert_eq!(b, Bounds { x: -1.0..3.0, y: 0.0..4.0 });
        let empty = Array2::<f64>::zeros((0, 2));
        assert_eq!(Bounds::of(&[empty.view()], 0.1).x, -1.0..1.0);
    }

    #[test]
    fn viridis_ends_and_clamps() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(7.0), viridis(1.0));
        assert_eq!(viridis(f64::NAN), viridis(0.0));
    }

    #[test]
    fn grid_covers_the_bounds() {
        let g = grid_centers(&Bounds { x: 0.0..2.0, y: -1.0..1.0 });
        assert_eq!(g.nrows(), GRID * GRID);
        assert!(g.column(0).iter().all(|&v| v > 0.0 && v < 2.0));
        assert!(g.column(1).iter().all(|&v| v > -1.0 && v < 1.0));
    }
}
