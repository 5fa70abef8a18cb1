//! Per-row log-densities of data under a flow, and what the tool says about them: the mean NLL
//! over the rows that have a density, the rows that have none, quantiles, and the check that
//! `train` runs before it starts (every row inside every layer's domain).

use super::number;
use anyhow::{bail, Result};
use flowspec_runtime::data::{self, Dataset};
use flowspec_runtime::{rng_from_seed, train, Flow, Real};
use ndarray::{Array2, ArrayView2, Axis};
use rand::RngExt;
use std::path::Path;

/// Rows per pass through the flow, to bound memory on large data.
const CHUNK: usize = 4096;
/// Row numbers listed in messages before "...".
const SHOWN_ROWS: usize = 5;
/// Values of one row shown in messages before "..." (image rows have hundreds).
const SHOWN_VALUES: usize = 8;

/// Adds one draw of U[0,1) noise from `seed` to every value, row by row: the same stream and
/// order as the runtime's evaluation noise, so `eval` of a dequantizing flow reproduces
/// `train::mean_nll` (the runtime keeps its helper private).
pub fn add_uniform_noise(x: &mut Array2<f64>, seed: u64) {
    let mut rng = rng_from_seed(seed);
    x.iter_mut().for_each(|v| *v += rng.random::<f64>());
}

/// The data as the flow is evaluated on it: with the fixed evaluation noise (seed
/// `train::EVAL_NOISE_SEED`) added if the flow dequantizes, as training validates.
pub fn as_flow_sees<F: Flow + ?Sized>(flow: &F, x: ArrayView2<f64>) -> Array2<f64> {
    let mut x = x.to_owned();
    if flow.dequantize() {
        add_uniform_noise(&mut x, train::EVAL_NOISE_SEED);
    }
    x
}

/// log p(x) of every row, in f64, evaluated in chunks in the flow's scalar type.
pub fn log_densities<F: Flow + ?Sized>(flow: &F, x: ArrayView2<f64>) -> Vec<f64> {
    x.axis_chunks_iter(Axis(0), CHUNK)
        .flat_map(|c| flow.log_prob(c.mapv(F::Real::of).view()).to_vec())
        .map(Real::f64)
        .collect()
}

/// What the log-densities of a set of rows add up to.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub rows: usize,
    /// The mean of -log p over the rows with a finite log-density; NaN if there are none.
    pub mean_nll: f64,
    /// Rows (0-based) with log p = -inf: zero density, e.g. outside a layer's domain.
    pub zero_density: Vec<usize>,
    /// Rows (0-based) with log p NaN or +inf: a numerical failure, not a density.
    pub invalid: Vec<usize>,
}

impl Summary {
    pub fn of(log_probs: &[f64]) -> Summary {
        let (mut sum, mut finite) = (0.0, 0usize);
        let (mut zero_density, mut invalid) = (Vec::new(), Vec::new());
        for (i, &lp) in log_probs.iter().enumerate() {
            if lp.is_finite() {
                sum -= lp;
                finite += 1;
            } else if lp == f64::NEG_INFINITY {
                zero_density.push(i);
            } else {
                invalid.push(i);
            }
        }
        let mean_nll = if finite > 0 { sum / finite as f64 } else { f64::NAN };
        Summary { rows: log_probs.len(), mean_nll, zero_density, invalid }
    }

    /// The rows the mean is over.
    pub fn finite(&self) -> usize {
        self.rows - self.zero_density.len() - self.invalid.len()
    }
}

/// The first few 0-based `rows` as 1-based numbers: "3, 8, 15, ..." (the dots when more).
pub fn first_rows(rows: &[usize]) -> String {
    let shown: Vec<String> = rows.iter().take(SHOWN_ROWS).map(|r| (r + 1).to_string()).collect();
    let more = if rows.len() > SHOWN_ROWS { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// The `q`-quantile of the values that are not NaN, interpolated linearly between order
/// statistics (numpy's default); -inf counts as the lowest value. None if no value is left.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * q;
    let (lo, frac) = (h.floor() as usize, h - h.floor());
    let (a, b) = (v[lo], v[(lo + 1).min(v.len() - 1)]);
    // Between -inf and a finite value every interpolated point is -inf; a - a would be NaN.
    if frac == 0.0 || a == b || a == f64::NEG_INFINITY {
        return Some(a);
    }
    Some(a + frac * (b - a))
}

/// Stops training before it starts when the flow gives some row of the data zero density (or
/// an undefined one): such rows lie outside a layer's domain, and their -inf log-likelihood
/// would make every batch holding one diverge. `spec` is the `--data` argument.
pub fn check_domain<F: Flow + ?Sized>(flow: &F, ds: &Dataset, spec: &str) -> Result<()> {
    for (split, x) in [("training", &ds.train), ("test", &ds.test)] {
        let bad = outside_domain(&log_densities(flow, as_flow_sees(flow, x.view()).view()));
        if bad.is_empty() {
            continue;
        }
        // A user file was shuffled into the splits: name its rows in file order instead.
        let path = Path::new(spec);
        if !data::BUILTIN.contains(&spec) && path.is_file() {
            let all = data::load_file(path)?;
            let bad = outside_domain(&log_densities(flow, as_flow_sees(flow, all.view()).view()));
            let what = format!("`{}`", path.display());
            bail!(domain_message(&what, flow.name(), &bad, all.view()));
        }
        let what = format!("the {split} split of `{}`", ds.name);
        bail!(domain_message(&what, flow.name(), &bad, x.view()));
    }
    Ok(())
}

/// Rows (0-based) whose log-density is -inf or NaN.
fn outside_domain(log_probs: &[f64]) -> Vec<usize> {
    let out = |lp: f64| lp == f64::NEG_INFINITY || lp.is_nan();
    (0..log_probs.len()).filter(|&i| out(log_probs[i])).collect()
}

/// The error of [`check_domain`]: where, how many, the first offending rows with their
/// values, and what zero density means.
fn domain_message(what: &str, flow: &str, bad: &[usize], x: ArrayView2<f64>) -> String {
    let mut msg = format!(
        "{what}: the flow `{flow}` has zero density (log-density -inf) at {} of {} rows, so \
         it cannot be trained on this data:",
        bad.len(),
        x.nrows()
    );
    for &r in bad.iter().take(SHOWN_ROWS) {
        msg += &format!("\n  row {}: {}", r + 1, row_values(x.row(r).as_slice(), x.ncols()));
    }
    if bad.len() > SHOWN_ROWS {
        msg += &format!("\n  ... and {} more", bad.len() - SHOWN_ROWS);
    }
    msg += "\n(rows are 1-based, not counting a header) A row has zero density when it lies \
            outside a layer's domain (e.g. a value outside [0, 1] for a layer that needs the \
            unit interval) or so far out that the density underflows: rescale or clean the \
            data, or change the flow.";
    msg
}

/// "[0.5, -1.25, ...]", at most SHOWN_VALUES values.
fn row_values(row: Option<&[f64]>, ncols: usize) -> String {
    let Some(row) = row else {
        return format!("({ncols} values)");
    };
    let shown: Vec<String> = row.iter().take(SHOWN_VALUES).map(|&v| number(v)).collect();
    let more = if row.len() > SHOWN_VALUES { ", ..." } else { "" };
    format!("[{}{more}]", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn quantile_interpolates_like_numpy() {
        let v = [3.0, 1.0, 2.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(5.0));
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        // numpy.quantile([1, 2, 3, 4, 5], 0.1) == 1.4
        assert!((quantile(&v, 0.1).unwrap() - 1.4).abs() < 1e-12);
        assert_eq!(quantile(&[7.0], 0.3), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[f64::NAN], 0.5), None);
        assert_eq!(quantile(&v, 1.5), None);
    }

    #[test]
    fn quantile_handles_infinities_and_nan() {
        let v = [f64::NEG_INFINITY, f64::NAN, 0.0, 1.0];
        // NaN is dropped: the values are [-inf, 0, 1].
        assert_eq!(quantile(&v, 0.25), Some(f64::NEG_INFINITY));
        assert_eq!(quantile(&v, 0.5), Some(0.0));
        assert_eq!(quantile(&v, 0.75), Some(0.5));
        let all = [f64::NEG_INFINITY; 3];
        assert_eq!(quantile(&all, 0.5), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn summary_separates_zero_density_and_invalid_rows() {
        let s = Summary::of(&[-1.0, f64::NEG_INFINITY, -3.0, f64::NAN, f64::INFINITY]);
        assert_eq!(s.rows, 5);
        assert_eq!(s.mean_nll, 2.0);
        assert_eq!((s.zero_density.clone(), s.invalid.clone()), (vec![1], vec![3, 4]));
        assert_eq!(s.finite(), 2);
        let none = Summary::of(&[f64::NEG_INFINITY]);
        assert!(none.mean_nll.is_nan() && none.finite() == 0);
        assert!(Summary::of(&[]).mean_nll.is_nan());
    }

    #[test]
    fn rows_are_listed_one_based() {
        assert_eq!(first_rows(&[0, 4]), "1, 5");
        assert_eq!(first_rows(&[0, 1, 2, 3, 4, 5]), "1, 2, 3, 4, 5, ...");
        assert_eq!(outside_domain(&[0.0, f64::NEG_INFINITY, f64::NAN, 1.0]), vec![1, 2]);
    }

    #[test]
    fn domain_message_names_rows_and_values() {
        let x = array![[0.5], [1.5], [-0.25], [1e200]];
        let m = domain_message("`d.csv`", "Unit", &[1, 2, 3], x.view());
        let first = "`d.csv`: the flow `Unit` has zero density (log-density -inf) at 3 of 4 rows";
        assert!(m.starts_with(first), "{m}");
        assert!(m.contains(":\n  row 2: [1.5]\n  row 3: [-0.25]\n  row 4: [1e200]\n(rows"));
        assert!(m.contains("outside a layer's domain"));
        let many: Vec<usize> = (0..4).cycle().take(7).collect();
        assert!(domain_message("d", "U", &many, x.view()).contains("\n  ... and 2 more\n"));
        let wide = Array2::<f64>::zeros((1, 10));
        assert_eq!(row_values(wide.row(0).as_slice(), 10), "[0, 0, 0, 0, 0, 0, 0, 0, ...]");
    }

    /// The identity flow on a standard normal, dequantizing: log p(x) is the normal's.
    struct Identity;

    impl Flow for Identity {
        type Real = f64;
        fn name(&self) -> &str {
            "Identity"
        }
        fn dim(&self) -> usize {
            2
        }
        fn fingerprint(&self) -> u64 {
            0
        }
        fn visit_params(&self, _: &mut dyn FnMut(String, &[usize], &[f64])) {}
        fn visit_params_mut(&mut self, _: &mut dyn FnMut(String, &[usize], &mut [f64])) {}
        fn inverse(&self, x: ArrayView2<f64>) -> (Array2<f64>, ndarray::Array1<f64>) {
            (x.to_owned(), ndarray::Array1::zeros(x.nrows()))
        }
        fn forward(&self, z: ArrayView2<f64>) -> (Array2<f64>, ndarray::Array1<f64>) {
            self.inverse(z)
        }
        fn base_log_prob(&self, z: ArrayView2<f64>) -> ndarray::Array1<f64> {
            flowspec_runtime::base::std_normal_log_prob(z)
        }
        fn sample_base(&self, n: usize, rng: &mut dyn rand::Rng) -> Array2<f64> {
            flowspec_runtime::base::std_normal_sample(n, 2, rng)
        }
        fn nll_and_grad(&self, x: ArrayView2<f64>) -> (f64, Vec<f64>) {
            (self.mean_nll(x), Vec::new())
        }
        fn forward_vjp(
            &self,
            _: ArrayView2<f64>,
            gx: ArrayView2<f64>,
            _: ndarray::ArrayView1<f64>,
        ) -> (Vec<f64>, Array2<f64>) {
            (Vec::new(), gx.to_owned())
        }
        fn log_prob_grad_x(&self, x: ArrayView2<f64>) -> (ndarray::Array1<f64>, Array2<f64>) {
            (self.log_prob(x), -x.to_owned())
        }
        fn dequantize(&self) -> bool {
            true
        }
    }

    #[test]
    fn eval_noise_is_the_runtimes() {
        // More rows than one chunk, so the runtime's chunked noise stream is exercised.
        let x = Array2::from_shape_fn((5000, 2), |(i, j)| ((i * 3 + j) % 7) as f64 - 3.0);
        let ours = Summary::of(&log_densities(&Identity, as_flow_sees(&Identity, x.view()).view()));
        let runtime = train::mean_nll(&Identity, x.view());
        assert!((ours.mean_nll - runtime).abs() < 1e-12, "{} vs {runtime}", ours.mean_nll);
        let plain = Summary::of(&log_densities(&Identity, x.view())).mean_nll;
        assert!((plain - runtime).abs() > 1e-3, "the noise made no difference");
    }

    #[test]
    fn noise_is_fixed_and_in_the_unit_interval() {
        let mut a = Array2::<f64>::zeros((50, 3));
        let mut b = a.clone();
        add_uniform_noise(&mut a, 1234);
        add_uniform_noise(&mut b, 1234);
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
    }
}
