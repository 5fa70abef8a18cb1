//! Glow's actnorm: an elementwise affine layer with per-dimension parameters, initialised from
//! data (NICE's rescaling is an `affine` transformer, see `transform`). `cols[i]` is the physical column of logical dimension `i`; parameters are
//! indexed by `i`.
//!
//! The kernels loop column by column so each `exp` is computed once per dimension, not once
//! per element.

use crate::nn::{standard_slice, standard_slice_mut};
use crate::params::{join, Params};
use crate::real::Real;
use ndarray::{Array1, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Zip};

/// Actnorm parameters: `z = (x - loc) * exp(-log_scale)`.
#[derive(Clone, Debug, PartialEq)]
pub struct ActNorm<T> {
    pub loc: Array1<T>,
    pub log_scale: Array1<T>,
}

impl<T: Real> ActNorm<T> {
    /// The identity actnorm over `d` dimensions.
    pub fn zeros(d: usize) -> Self {
        Self { loc: Array1::zeros(d), log_scale: Array1::zeros(d) }
    }
}

impl<T: Real> Params<T> for ActNorm<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &[T])) {
        visit_vec(prefix, "loc", &self.loc, f);
        visit_vec(prefix, "log_scale", &self.log_scale, f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        visit_vec_mut(prefix, "loc", &mut self.loc, f);
        visit_vec_mut(prefix, "log_scale", &mut self.log_scale, f);
    }
}

fn visit_vec<T: Real, F>(prefix: &str, name: &str, v: &Array1<T>, f: &mut F)
where
    F: FnMut(String, &[usize], &[T]) + ?Sized,
{
    let v = v.as_standard_layout();
    f(join(prefix, name), &[v.len()], standard_slice(&v));
}

fn visit_vec_mut<T: Real, F>(prefix: &str, name: &str, v: &mut Array1<T>, f: &mut F)
where
    F: FnMut(String, &[usize], &mut [T]) + ?Sized,
{
    let n = v.len();
    f(join(prefix, name), &[n], standard_slice_mut(v));
}

/// Adds `delta` to every row's log-determinant.
fn add_ld<T: Real>(mut ld: ArrayViewMut1<T>, delta: T) {
    ld += delta;
}

/// Actnorm, normalizing direction: `z = (x - loc) * exp(-log_scale)`, `ld += -sum log_scale`.
pub fn actnorm_inverse<T: Real>(
    p: &ActNorm<T>,
    cols: &[usize],
    mut x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
) {
    debug_assert_eq!(cols.len(), p.loc.len(), "actnorm_inverse: cols");
    for (i, &c) in cols.iter().enumerate() {
        let (loc, e) = (p.loc[i], (-p.log_scale[i]).exp());
        x.column_mut(c).mapv_inplace(|v| (v - loc) * e);
    }
    add_ld(ld, -p.log_scale.sum());
}

/// Actnorm, generative direction: `x = z * exp(log_scale) + loc`, `ld += sum log_scale`.
pub fn actnorm_forward<T: Real>(
    p: &ActNorm<T>,
    cols: &[usize],
    mut x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
) {
    debug_assert_eq!(cols.len(), p.loc.len(), "actnorm_forward: cols");
    for (i, &c) in cols.iter().enumerate() {
        let (loc, e) = (p.loc[i], p.log_scale[i].exp());
        x.column_mut(c).mapv_inplace(|v| v * e + loc);
    }
    add_ld(ld, p.log_scale.sum());
}

/// Backward pass of [`actnorm_inverse`]: `g` holds dLoss/dz on entry and dLoss/dx on return;
/// parameter gradients are accumulated into `grad`.
pub fn actnorm_backward<T: Real>(
    p: &ActNorm<T>,
    cols: &[usize],
    x_in: ArrayView2<T>,
    mut g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut ActNorm<T>,
) {
    debug_assert_eq!(x_in.dim(), g.dim(), "actnorm_backward: shapes");
    let dld_sum = dld.sum();
    for (i, &c) in cols.iter().enumerate() {
        let (loc, e) = (p.loc[i], (-p.log_scale[i]).exp());
        let (mut sum_g, mut sum_gx) = (T::zero(), T::zero());
        Zip::from(g.column_mut(c)).and(x_in.column(c)).for_each(|g, &x| {
            sum_g += *g;
            sum_gx += *g * (x - loc);
            *g *= e;
        });
        grad.loc[i] -= sum_g * e;
        grad.log_scale[i] -= sum_gx * e + dld_sum;
    }
}

/// Backward pass of [`actnorm_forward`]: `z_in` is the forward kernel's input, `g` holds
/// dLoss/dx on entry and dLoss/dz on return; parameter gradients are accumulated into `grad`.
pub fn actnorm_forward_backward<T: Real>(
    p: &ActNorm<T>,
    cols: &[usize],
    z_in: ArrayView2<T>,
    mut g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut ActNorm<T>,
) {
    debug_assert_eq!(z_in.dim(), g.dim(), "actnorm_forward_backward: shapes");
    let dld_sum = dld.sum();
    for (i, &c) in cols.iter().enumerate() {
        let e = p.log_scale[i].exp();
        let (mut sum_g, mut sum_gz) = (T::zero(), T::zero());
        Zip::from(g.column_mut(c)).and(z_in.column(c)).for_each(|g, &z| {
            sum_g += *g;
            sum_gz += *g * z;
            *g *= e;
        });
        grad.loc[i] += sum_g;
        grad.log_scale[i] += sum_gz * e + dld_sum;
    }
}

/// Glow's data-dependent init: `loc` is the column mean of `x[:, cols[i]]` and `log_scale`
/// is `ln(population std + 1e-6)`, so the layer maps `x` to zero mean and unit variance.
/// An empty batch leaves the parameters unchanged.
pub fn actnorm_data_init<T: Real>(p: &mut ActNorm<T>, cols: &[usize], x: ArrayView2<T>) {
    let n = x.nrows();
    if n == 0 {
        return;
    }
    for (i, &c) in cols.iter().enumerate() {
        // Accumulate in f64: f32 sums over large batches lose the low bits of the variance.
        let col = x.column(c);
        let mean = col.iter().map(|v| v.f64()).sum::<f64>() / n as f64;
        let var = col.iter().map(|v| (v.f64() - mean).powi(2)).sum::<f64>() / n as f64;
        p.loc[i] = T::of(mean);
        p.log_scale[i] = T::of((var.sqrt() + 1e-6).ln());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::{check_layer, randomize, rng, uniform, Layer};

    struct Norm(ActNorm<f64>, Vec<usize>);

    impl Layer for Norm {
        type P = ActNorm<f64>;
        fn params_mut(&mut self) -> &mut ActNorm<f64> {
            &mut self.0
        }
        fn inverse(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
            actnorm_inverse(&self.0, &self.1, x, ld);
        }
        fn forward(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
            actnorm_forward(&self.0, &self.1, x, ld);
        }
        fn backward(
            &mut self,
            x: ArrayView2<f64>,
            g: ArrayViewMut2<f64>,
            dld: ArrayView1<f64>,
            grad: &mut ActNorm<f64>,
        ) {
            actnorm_backward(&self.0, &self.1, x, g, dld, grad);
        }
        fn forward_backward(
            &mut self,
            z: ArrayView2<f64>,
            g: ArrayViewMut2<f64>,
            dld: ArrayView1<f64>,
            grad: &mut ActNorm<f64>,
        ) {
            actnorm_forward_backward(&self.0, &self.1, z, g, dld, grad);
        }
    }

    #[test]
    fn actnorm_kernels() {
        let mut p = ActNorm::zeros(4);
        randomize(&mut p, &mut rng(20), 1.0);
        check_layer(&mut Norm(p.clone(), vec![2, 0, 3, 1]), 4, 21);
        // Acting on a subset of the columns leaves the others alone.
        let mut p3 = ActNorm::zeros(2);
        randomize(&mut p3, &mut rng(22), 1.0);
        check_layer(&mut Norm(p3, vec![2, 0]), 3, 23);
    }

    #[test]
    fn actnorm_data_init_standardizes() {
        let mut x = uniform(&mut rng(26), 50, 3, 1.0);
        x.column_mut(1).mapv_inplace(|v| 5.0 * v + 3.0);
        let cols = [1, 2, 0];
        let mut p = ActNorm::zeros(3);
        actnorm_data_init(&mut p, &cols, x.view());
        let mut ld = Array1::zeros(50);
        actnorm_inverse(&p, &cols, x.view_mut(), ld.view_mut());
        for c in 0..3 {
            let col = x.column(c);
            let mean = col.mean().unwrap_or(f64::NAN);
            let var = col.mapv(|v| v * v).mean().unwrap_or(f64::NAN) - mean * mean;
            assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-5, "col {c}: {mean} {var}");
        }
        actnorm_data_init(&mut p, &cols, x.slice(ndarray::s![0..0, ..]));
        assert!(p.loc.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn param_names_and_shapes() {
        let mut names = Vec::new();
        ActNorm::<f32>::zeros(3).visit("l0", &mut |n, s, d| names.push((n, s.to_vec(), d.len())));
        let want = [("l0.loc", 3), ("l0.log_scale", 3)];
        let want: Vec<_> = want.iter().map(|&(n, d)| (n.to_string(), vec![d], d)).collect();
        assert_eq!(names, want);
    }
}
