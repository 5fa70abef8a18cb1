//! A learnable mixture of K diagonal normals:
//! `p(z) = sum_k softmax(logits)_k N(z; means_k, diag(exp(2 log_scales_k)))`.
//!
//! Everything goes through log-sum-exp over the components with the maximum subtracted, so a
//! point far from every component keeps a finite log-density and finite responsibilities.

use super::HALF_LN_2PI;
use crate::nn::{standard_slice, standard_slice_mut};
use crate::params::{join, Params};
use crate::real::Real;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2};
use rand::distr::StandardUniform;
use rand_distr::{Distribution, StandardNormal};

/// The parameters of a K-component mixture over D logical dimensions (also its gradient).
#[derive(Clone, Debug, PartialEq)]
pub struct Mixture<T> {
    /// Unnormalized log-weights (K).
    pub logits: Array1<T>,
    /// Component means (K x D).
    pub means: Array2<T>,
    /// Component log standard deviations (K x D).
    pub log_scales: Array2<T>,
}

impl<T: Real> Mixture<T> {
    /// Equal weights, unit scales and means drawn from N(0, 1): distinct means break the
    /// symmetry between components, which identical ones would never leave.
    pub fn new(k: usize, d: usize, rng: &mut crate::FlowRng) -> Self {
        let means = Array2::from_shape_simple_fn((k, d), || {
            let m: f64 = StandardNormal.sample(rng);
            T::of(m)
        });
        Self { means, ..Self::zeros(k, d) }
    }

    /// All parameters zero (a gradient accumulator; as a distribution, K copies of N(0, I)).
    pub fn zeros(k: usize, d: usize) -> Self {
        Self {
            logits: Array1::zeros(k),
            means: Array2::zeros((k, d)),
            log_scales: Array2::zeros((k, d)),
        }
    }

    /// The number of components K.
    pub fn components(&self) -> usize {
        self.logits.len()
    }

    /// The event size D.
    pub fn dim(&self) -> usize {
        self.means.ncols()
    }
}

impl<T: Real> Params<T> for Mixture<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &[T])) {
        let (k, d) = self.means.dim();
        f(join(prefix, "logits"), &[k], standard_slice(&self.logits));
        f(join(prefix, "means"), &[k, d], standard_slice(&self.means));
        f(join(prefix, "log_scales"), &[k, d], standard_slice(&self.log_scales));
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        let (k, d) = self.means.dim();
        f(join(prefix, "logits"), &[k], standard_slice_mut(&mut self.logits));
        f(join(prefix, "means"), &[k, d], standard_slice_mut(&mut self.means));
        f(join(prefix, "log_scales"), &[k, d], standard_slice_mut(&mut self.log_scales));
    }
}

/// `ln sum_i exp(a_i)`, stable. An empty or all `-inf` input gives `-inf`, not NaN.
fn log_sum_exp<T: Real>(a: &[T]) -> T {
    let max = a.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
    if max == T::neg_infinity() || !max.is_finite() {
        return max;
    }
    max + a.iter().map(|&v| (v - max).exp()).sum::<T>().ln()
}

/// What every row needs, computed once per call: log-weights plus the normalizers
/// (`ln pi_k - sum_i log_scale_ki - D ln(2 pi)/2`) and the inverse scales.
struct Prepared<T> {
    log_weight: Array1<T>,
    norm: Array1<T>,
    inv_scale: Array2<T>,
}

impl<T: Real> Prepared<T> {
    fn new(p: &Mixture<T>) -> Self {
        let lse = log_sum_exp(standard_slice(&p.logits));
        let log_weight = p.logits.mapv(|l| l - lse);
        let half_d = T::of(HALF_LN_2PI * p.dim() as f64);
        let norm = Array1::from_shape_fn(p.components(), |k| {
            log_weight[k] - p.log_scales.row(k).sum() - half_d
        });
        Self { log_weight, norm, inv_scale: p.log_scales.mapv(|l| (-l).exp()) }
    }

    /// `out[k] = ln pi_k + ln N_k(z)` for one row.
    fn joint(&self, p: &Mixture<T>, cols: &[usize], row: ArrayView1<T>, out: &mut [T]) {
        let half = T::of(0.5);
        for (k, o) in out.iter_mut().enumerate() {
            let mut sq = T::zero();
            for (i, &c) in cols.iter().enumerate() {
                let u = (row[c] - p.means[[k, i]]) * self.inv_scale[[k, i]];
                sq += u * u;
            }
            *o = self.norm[k] - half * sq;
        }
    }
}

/// log p(z) of every row's logical vector `z_i = z[:, cols[i]]`.
pub fn mixture_log_prob<T: Real>(p: &Mixture<T>, cols: &[usize], z: ArrayView2<T>) -> Array1<T> {
    debug_assert_eq!(cols.len(), p.dim(), "mixture_log_prob: cols");
    let prep = Prepared::new(p);
    let mut a = vec![T::zero(); p.components()];
    let row_lp = |row| {
        prep.joint(p, cols, row, &mut a);
        log_sum_exp(&a)
    };
    z.rows().into_iter().map(row_lp).collect()
}

/// `g = scale * d(-log p)/dz` (overwritten; columns outside `cols` get 0) and
/// `grad += d(scale * sum_rows(-log p))/d(params)`. With responsibilities `r_k` (the posterior
/// of component k) and `u_ki = (z_i - mean_ki) / scale_ki`: `d(-log p)/dz_i = sum_k r_k u_ki /
/// scale_ki`, `d/dmean_ki = -r_k u_ki / scale_ki`, `d/dlog_scale_ki = r_k (1 - u_ki^2)`,
/// `d/dlogit_k = pi_k - r_k`.
pub fn mixture_nll_grad<T: Real>(
    p: &Mixture<T>,
    cols: &[usize],
    z: ArrayView2<T>,
    scale: T,
    mut g: ArrayViewMut2<T>,
    grad: &mut Mixture<T>,
) {
    debug_assert_eq!(z.dim(), g.dim(), "mixture_nll_grad: shapes");
    g.fill(T::zero());
    let prep = Prepared::new(p);
    let weight = prep.log_weight.mapv(|l| l.exp());
    let mut r = vec![T::zero(); p.components()];
    for (row, mut g_row) in z.rows().into_iter().zip(g.rows_mut()) {
        prep.joint(p, cols, row, &mut r);
        let lse = log_sum_exp(&r);
        r.iter_mut().for_each(|v| *v = (*v - lse).exp());
        for (k, &rk) in r.iter().enumerate() {
            grad.logits[k] += scale * (weight[k] - rk);
            for (i, &c) in cols.iter().enumerate() {
                let inv = prep.inv_scale[[k, i]];
                let u = (row[c] - p.means[[k, i]]) * inv;
                let dz = scale * rk * u * inv;
                g_row[c] += dz;
                grad.means[[k, i]] -= dz;
                grad.log_scales[[k, i]] += scale * rk * (T::one() - u * u);
            }
        }
    }
}

/// `n` draws as an `n x D` matrix in logical order: per row a component from the weights, then
/// `mean + scale * eps`. With no components (which the compiler rejects) rows are NaN.
pub fn mixture_sample<T: Real>(p: &Mixture<T>, n: usize, rng: &mut dyn rand::Rng) -> Array2<T> {
    let prep = Prepared::new(p);
    let weight: Vec<f64> = prep.log_weight.iter().map(|l| l.exp().f64()).collect();
    let mut x = Array2::from_elem((n, p.dim()), T::nan());
    if weight.is_empty() {
        return x;
    }
    for mut row in x.rows_mut() {
        let k = pick(&weight, StandardUniform.sample(rng));
        for (i, v) in row.iter_mut().enumerate() {
            let e: f64 = StandardNormal.sample(rng);
            *v = p.means[[k, i]] + T::of(e) * p.log_scales[[k, i]].exp();
        }
    }
    x
}

/// The component whose cumulative-weight interval holds `u` in [0, 1); the last one when
/// rounding (or NaN weights) leaves `u` beyond the total. `weight` is not empty.
fn pick(weight: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (k, &w) in weight.iter().enumerate() {
        acc += w;
        if u < acc {
            return k;
        }
    }
    weight.len() - 1
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{check_z_grad, mass, moments, scatter};
    use super::*;
    use crate::layers::testutil::{assert_close, fd_grad, flatten, rng, unflatten, uniform};
    use ndarray::array;

    fn example() -> Mixture<f64> {
        Mixture {
            logits: array![0.3, -0.5, 1.0],
            means: array![[1.0, -1.0], [-2.0, 0.5], [0.0, 2.0]],
            log_scales: array![[-0.2, 0.1], [0.3, -0.4], [0.0, 0.2]],
        }
    }

    #[test]
    fn integrates_to_one() {
        let p1 = Mixture {
            logits: array![0.2, -1.0],
            means: array![[-1.5], [2.0]],
            log_scales: array![[-0.5], [0.4]],
        };
        let lp = |z: ArrayView2<f64>| mixture_log_prob(&p1, &[0], z);
        assert!((mass(lp, 1, -15.0, 15.0, 6000) - 1.0).abs() < 1e-9);
        let p = example();
        let lp2 = |z: ArrayView2<f64>| mixture_log_prob(&p, &[1, 0], z);
        assert!((mass(lp2, 2, -12.0, 12.0, 600) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn one_component_is_a_diag_normal_and_far_points_are_finite() {
        let p = Mixture {
            logits: array![3.0],
            means: array![[0.5, -1.0]],
            log_scales: array![[0.2, -0.3]],
        };
        let q = crate::base::DiagNormal { loc: array![0.5, -1.0], log_scale: array![0.2, -0.3] };
        let z = uniform(&mut rng(8), 5, 2, 3.0);
        let a = mixture_log_prob(&p, &[1, 0], z.view());
        let b = crate::base::diag_normal_log_prob(&q, &[1, 0], z.view());
        assert_close("K = 1", a.as_slice().unwrap(), b.as_slice().unwrap(), 1e-13);
        // 1e3 away every component's density underflows; log-sum-exp keeps everything finite.
        let far = array![[1e3, -1e3]];
        let lp = mixture_log_prob(&example(), &[0, 1], far.view());
        assert!(lp[0].is_finite() && lp[0] < -1e5);
        let mut g = Array2::zeros((1, 2));
        let mut grad = Mixture::zeros(3, 2);
        mixture_nll_grad(&example(), &[0, 1], far.view(), 1.0, g.view_mut(), &mut grad);
        assert!(g.iter().chain(flatten(&grad).iter()).all(|v| v.is_finite()));
    }

    #[test]
    fn gradients_match_finite_differences() {
        let p = example();
        let cols = [1, 0];
        let z = scatter(&uniform(&mut rng(9), 6, 2, 3.0), &cols);
        let lp = |z: ArrayView2<f64>| mixture_log_prob(&p, &cols, z);
        let mut sink = Mixture::zeros(3, 2);
        check_z_grad(&z, 0.4, lp, |z, s, g| mixture_nll_grad(&p, &cols, z, s, g, &mut sink));
        let mut grad = Mixture::zeros(3, 2);
        grad.logits.fill(1.5); // accumulates onto what is there
        let mut g = Array2::zeros(z.dim());
        mixture_nll_grad(&p, &cols, z.view(), 0.4, g.view_mut(), &mut grad);
        grad.logits -= 1.5;
        let fd = fd_grad(&flatten(&p), |v| {
            let mut q = p.clone();
            unflatten(&mut q, v);
            -0.4 * mixture_log_prob(&q, &cols, z.view()).sum()
        });
        assert_close("dparams", &flatten(&grad), &fd, 1e-7);
    }

    #[test]
    fn cols_pick_logical_dimensions() {
        let p = example();
        let logical = uniform(&mut rng(10), 4, 2, 2.0);
        let a = mixture_log_prob(&p, &[0, 1], logical.view());
        let b = mixture_log_prob(&p, &[1, 0], scatter(&logical, &[1, 0]).view());
        assert_close("permuted", a.as_slice().unwrap(), b.as_slice().unwrap(), 1e-14);
    }

    #[test]
    fn samples_match_the_mixture_moments() {
        let p = example();
        let x = mixture_sample(&p, 60_000, &mut rng(11));
        let (mean, var) = moments(&x);
        let w = p.logits.mapv(f64::exp) / p.logits.mapv(f64::exp).sum();
        for i in 0..2 {
            let m: f64 = (0..3).map(|k| w[k] * p.means[[k, i]]).sum();
            let s2: f64 = (0..3)
                .map(|k| w[k] * ((2.0 * p.log_scales[[k, i]]).exp() + p.means[[k, i]].powi(2)))
                .sum::<f64>()
                - m * m;
            assert!((mean[i] - m).abs() < 0.03, "mean[{i}] {} vs {m}", mean[i]);
            assert!((var[i] / s2 - 1.0).abs() < 0.03, "var[{i}] {} vs {s2}", var[i]);
        }
        assert!(mixture_sample(&Mixture::<f64>::zeros(0, 2), 3, &mut rng(0))
            .iter()
            .all(|v| v.is_nan()));
    }

    #[test]
    fn new_and_params() {
        let p: Mixture<f64> = Mixture::new(4, 3, &mut rng(12));
        assert_eq!(p, Mixture::new(4, 3, &mut rng(12)));
        assert!(p.logits.iter().chain(&p.log_scales).all(|&v| v == 0.0));
        assert!(p.means.iter().all(|&v| v != 0.0 && v.abs() < 6.0));
        let mut specs = Vec::new();
        p.visit("b", &mut |n, s, d| specs.push((n, s.to_vec(), d.len())));
        let want = [
            ("b.logits", vec![4], 4),
            ("b.means", vec![4, 3], 12),
            ("b.log_scales", vec![4, 3], 12),
        ];
        assert_eq!(specs, want.map(|(n, s, l)| (n.to_string(), s, l)));
        assert_eq!((p.components(), p.dim(), log_sum_exp::<f64>(&[])), (4, 3, f64::NEG_INFINITY));
        assert_eq!(pick(&[0.5, 0.5], 0.99999), 1);
        assert_eq!(pick(&[f64::NAN, f64::NAN], 0.2), 1);
    }
}
