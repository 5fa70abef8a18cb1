//! Coupling layers: the columns `trans` are transformed by an elementwise map whose
//! parameters an [`Mlp`] computes from the columns `cond`, which pass through unchanged.
//!
//! The conditioner's input is `x[:, cond]`, gathered in the order of `cond`. Affine
//! (RealNVP) conditioners output `2 |trans|` columns: shifts first, then raw log-scales.
//! Additive (NICE) conditioners output `|trans|` shifts.

use super::Tape;
use crate::nn::{resize, Mlp, MlpScratch};
use crate::real::Real;
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Zip};
use std::ops::{Index, IndexMut};

/// Buffers of a coupling layer, reused across calls.
#[derive(Clone, Debug, Default)]
pub struct CouplingScratch<T> {
    /// The conditioner's buffers.
    pub net: MlpScratch<T>,
    /// `x[:, cond]`, the conditioner's input.
    pub xc: Array2<T>,
    /// The gradient with respect to the conditioner's output.
    pub dout: Array2<T>,
    /// The gradient with respect to the conditioner's input.
    pub dxc: Array2<T>,
    /// One column of scales `exp(+-s)`, computed for all rows in one vectorised pass.
    pub scale: Vec<T>,
}

/// zuko's soft clamp of a raw log-scale, `a / (1 + |a| / bound)`, and the factor
/// `1 + |a| / bound` (its derivative is the inverse square of that factor).
#[inline]
pub(crate) fn soft_clamp<T: Real>(a: T, bound: T) -> (T, T) {
    let r = T::one() + a.abs() / bound;
    (a / r, r)
}

/// Gathers `x[:, cond]` into `s.xc` and runs the conditioner on it.
pub(crate) fn condition<T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    x: ArrayView2<T>,
    s: &mut CouplingScratch<T>,
) {
    resize(&mut s.xc, x.nrows(), cond.len());
    Zip::from(s.xc.rows_mut()).and(x.rows()).for_each(|mut dst, src| {
        for (d, &c) in dst.iter_mut().zip(cond) {
            *d = src[c];
        }
    });
    net.forward(s.xc.view(), &mut s.net);
}

/// The conditioner's output after [`condition`]. A layerless conditioner is the identity and
/// leaves its input in `acts` too; `xc` is only the fallback for a scratch never run.
pub(crate) fn net_out<'a, T>(net: &'a MlpScratch<T>, xc: &'a Array2<T>) -> ArrayView2<'a, T> {
    debug_assert!(!net.acts.is_empty(), "coupling: conditioner not run");
    net.acts.last().unwrap_or(xc).view()
}

/// Backpropagates `s.dout` (filled by the caller) through the conditioner, accumulating its
/// parameter gradients, and adds the gradient with respect to its input to `g[:, cond]`.
pub(crate) fn condition_backward<T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    mut g: ArrayViewMut2<T>,
    grad: &mut Mlp<T>,
    s: &mut CouplingScratch<T>,
) {
    resize(&mut s.dxc, g.nrows(), cond.len());
    s.dxc.fill(T::zero());
    net.backward(s.xc.view(), &mut s.net, s.dout.view(), grad, Some(s.dxc.view_mut()));
    Zip::from(g.rows_mut()).and(s.dxc.rows()).for_each(|mut dst, src| {
        for (&v, &c) in src.iter().zip(cond) {
            dst[c] += v;
        }
    });
}

/// Affine coupling, normalizing direction:
/// `z[:, trans[k]] = x[:, trans[k]] * exp(s_k) + b_k`, `ld += sum_k s_k`.
pub fn affine_coupling_inverse<T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    bound: T,
    x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
    s: &mut CouplingScratch<T>,
) {
    condition(net, cond, x.view(), s);
    affine_apply(net_out(&s.net, &s.xc), trans, bound, true, x, ld, &mut s.scale);
}

/// One row of [`affine_coupling_inverse`] (`normalize`) or [`affine_coupling_forward`] given
/// the conditioner's output `o`; returns the row's log-det. The per-row kernels' arithmetic:
/// the batch kernels do the same per column in `affine_apply`, with `exp` vectorised (within
/// 2 ulp of this scalar `exp`).
#[inline(always)]
pub(crate) fn affine_row<
    T: Real,
    R: IndexMut<usize, Output = T> + ?Sized,
    O: Index<usize, Output = T> + ?Sized,
>(
    trans: &[usize],
    bound: T,
    normalize: bool,
    row: &mut R,
    o: &O,
) -> T {
    let t = trans.len();
    let mut acc = T::zero();
    for (k, &c) in trans.iter().enumerate() {
        let (sk, _) = soft_clamp(o[t + k], bound);
        row[c] = if normalize { row[c] * sk.exp() + o[k] } else { (row[c] - o[k]) * (-sk).exp() };
        acc += sk;
    }
    if normalize {
        acc
    } else {
        -acc
    }
}

/// Affine coupling, generative direction: `x = (z - b) * exp(-s)`, `ld += -sum_k s_k`.
pub fn affine_coupling_forward<T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    bound: T,
    x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
    s: &mut CouplingScratch<T>,
) {
    condition(net, cond, x.view(), s);
    affine_apply(net_out(&s.net, &s.xc), trans, bound, false, x, ld, &mut s.scale);
}

/// Both directions of the affine map, given the conditioner's output `o`, one transformed
/// column at a time: the clamped log-scales of all rows (added to `ld`, negated for the
/// generative direction), their exponentials in one vectorised pass, then the update.
fn affine_apply<T: Real>(
    o: ArrayView2<T>,
    trans: &[usize],
    bound: T,
    inverse: bool,
    mut x: ArrayViewMut2<T>,
    mut ld: ArrayViewMut1<T>,
    scale: &mut Vec<T>,
) {
    let t = trans.len();
    scale.resize(x.nrows(), T::zero());
    for (k, &c) in trans.iter().enumerate() {
        Zip::from(&mut scale[..]).and(o.column(t + k)).and(&mut ld).for_each(|e, &a, ld| {
            let (sk, _) = soft_clamp(a, bound);
            let sk = if inverse { sk } else { -sk };
            *ld += sk;
            *e = sk;
        });
        crate::vmath::exp_in_place(scale);
        let (b, col) = (o.column(k), x.column_mut(c));
        if inverse {
            Zip::from(col).and(&scale[..]).and(b).for_each(|x, &e, &b| *x = *x * e + b);
        } else {
            Zip::from(col).and(&scale[..]).and(b).for_each(|x, &e, &b| *x = (*x - b) * e);
        }
    }
}

/// Backward pass of [`affine_coupling_inverse`]. `x_in` is the layer's input (n x D); `g`
/// holds dLoss/dz on entry and dLoss/dx on return; `dld` is dLoss/d(ld) per row. Accumulates
/// the conditioner's parameter gradients into `grad`. `tape` is the scratch the same pass's
/// [`affine_coupling_inverse`] recorded (see [`Tape`]): its conditioner run is reused, not
/// recomputed.
#[allow(clippy::too_many_arguments)]
pub fn affine_coupling_backward<T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    bound: T,
    x_in: ArrayView2<T>,
    mut g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut Mlp<T>,
    tape: &mut Tape<CouplingScratch<T>>,
) {
    debug_assert_eq!(x_in.dim(), g.dim(), "affine_coupling_backward: shapes");
    let s = tape.replay(x_in.nrows());
    let t = trans.len();
    resize(&mut s.dout, x_in.nrows(), 2 * t);
    Zip::from(g.rows_mut())
        .and(x_in.rows())
        .and(net_out(&s.net, &s.xc).rows())
        .and(s.dout.rows_mut())
        .and(dld)
        .for_each(|mut gr, xr, o, mut dr, &dl| {
            for (k, &c) in trans.iter().enumerate() {
                let (sk, r) = soft_clamp(o[t + k], bound);
                let e = sk.exp();
                let gz = gr[c];
                gr[c] = gz * e;
                dr[k] = gz;
                // z depends on s through x * exp(s), ld through s itself.
                dr[t + k] = (gz * xr[c] * e + dl) / (r * r);
            }
        });
    condition_backward(net, cond, g, grad, s);
}

/// Backward pass of [`affine_coupling_forward`]. `z_in` is the forward kernel's input (n x D);
/// `g` holds dLoss/dx on entry and dLoss/dz on return; `dld` is dLoss/d(ld) per row.
/// Accumulates the conditioner's parameter gradients into `grad`. The conditioned columns
/// pass through (`x_c = z_c`), so the conditioner's input gradient is added to `g[:, cond]`.
/// `tape` is what the same pass's [`affine_coupling_forward`] recorded.
#[allow(clippy::too_many_arguments)]
pub fn affine_coupling_forward_backward<T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    bound: T,
    z_in: ArrayView2<T>,
    mut g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut Mlp<T>,
    tape: &mut Tape<CouplingScratch<T>>,
) {
    debug_assert_eq!(z_in.dim(), g.dim(), "affine_coupling_forward_backward: shapes");
    let s = tape.replay(z_in.nrows());
    let t = trans.len();
    resize(&mut s.dout, z_in.nrows(), 2 * t);
    Zip::from(g.rows_mut())
        .and(z_in.rows())
        .and(net_out(&s.net, &s.xc).rows())
        .and(s.dout.rows_mut())
        .and(dld)
        .for_each(|mut gr, zr, o, mut dr, &dl| {
            for (k, &c) in trans.iter().enumerate() {
                let (sk, r) = soft_clamp(o[t + k], bound);
                let e = (-sk).exp();
                let gx = gr[c];
                let x = (zr[c] - o[k]) * e;
                gr[c] = gx * e;
                dr[k] = -gx * e;
                // x = (z - b) exp(-s) and ld -= s: both pull s down.
                dr[t + k] = -(gx * x + dl) / (r * r);
            }
        });
    condition_backward(net, cond, g, grad, s);
}

/// Additive coupling, normalizing direction: `z[:, trans[k]] = x[:, trans[k]] + b_k`; the
/// log-determinant is zero, so `ld` is untouched.
pub fn additive_coupling_inverse<T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
    s: &mut CouplingScratch<T>,
) {
    additive_shift(net, cond, trans, T::one(), x, ld, s);
}

/// Additive coupling, generative direction: `x = z - b`.
pub fn additive_coupling_forward<T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
    s: &mut CouplingScratch<T>,
) {
    additive_shift(net, cond, trans, -T::one(), x, ld, s);
}

/// Adds `sign * b` to the transformed columns.
fn additive_shift<T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    sign: T,
    mut x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
    s: &mut CouplingScratch<T>,
) {
    debug_assert_eq!(x.nrows(), ld.len(), "additive coupling: ld length");
    condition(net, cond, x.view(), s);
    Zip::from(x.rows_mut())
        .and(net_out(&s.net, &s.xc).rows())
        .for_each(|mut row, o| shift_row(trans, sign, &mut row, &o));
}

/// One row of an additive coupling: adds `sign * o[k]` to column `trans[k]`.
#[inline(always)]
pub(crate) fn shift_row<
    T: Real,
    R: IndexMut<usize, Output = T> + ?Sized,
    O: Index<usize, Output = T> + ?Sized,
>(
    trans: &[usize],
    sign: T,
    row: &mut R,
    o: &O,
) {
    for (k, &c) in trans.iter().enumerate() {
        row[c] += sign * o[k];
    }
}

/// Backward pass of [`additive_coupling_inverse`]; arguments as in
/// [`affine_coupling_backward`] (`tape` recorded by [`additive_coupling_inverse`]). `dld` is unused (the log-determinant is constant) but kept
/// so every coupling has the same backward signature.
#[allow(clippy::too_many_arguments)]
pub fn additive_coupling_backward<T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    x_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut Mlp<T>,
    tape: &mut Tape<CouplingScratch<T>>,
) {
    debug_assert_eq!(x_in.dim(), g.dim(), "additive_coupling_backward: shapes");
    debug_assert_eq!(x_in.nrows(), dld.len(), "additive_coupling_backward: dld length");
    let s = tape.replay(x_in.nrows());
    resize(&mut s.dout, x_in.nrows(), trans.len());
    // dz/dx on the transformed columns is the identity, so g passes through there and the
    // shifts receive the same gradient.
    Zip::from(s.dout.rows_mut()).and(g.rows()).for_each(|mut dr, gr| {
        for (d, &c) in dr.iter_mut().zip(trans) {
            *d = gr[c];
        }
    });
    condition_backward(net, cond, g, grad, s);
}

/// Backward pass of [`additive_coupling_forward`]; arguments as in
/// [`affine_coupling_forward_backward`] (`tape` recorded by [`additive_coupling_forward`];
/// `dld` unused, the log-determinant is constant).
#[allow(clippy::too_many_arguments)]
pub fn additive_coupling_forward_backward<T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    z_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut Mlp<T>,
    tape: &mut Tape<CouplingScratch<T>>,
) {
    debug_assert_eq!(z_in.dim(), g.dim(), "additive_coupling_forward_backward: shapes");
    debug_assert_eq!(z_in.nrows(), dld.len(), "additive_coupling_forward_backward: dld length");
    let s = tape.replay(z_in.nrows());
    resize(&mut s.dout, z_in.nrows(), trans.len());
    // x = z - b: g passes through the transformed columns and the shifts get its negation.
    Zip::from(s.dout.rows_mut()).and(g.rows()).for_each(|mut dr, gr| {
        for (d, &c) in dr.iter_mut().zip(trans) {
            *d = -gr[c];
        }
    });
    condition_backward(net, cond, g, grad, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::{check_layer, randomize, rng, Layer};
    use crate::nn::Activation;
    use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

    struct Coupling {
        affine: bool,
        net: Mlp<f64>,
        cond: Vec<usize>,
        trans: Vec<usize>,
        bound: f64,
        s: CouplingScratch<f64>,
        tape: Tape<CouplingScratch<f64>>,
    }

    impl Coupling {
        /// A coupling with random conditioner weights, large enough that the soft clamp bites.
        fn new(affine: bool, act: Activation, cond: &[usize], trans: &[usize], seed: u64) -> Self {
            let out = if affine { 2 * trans.len() } else { trans.len() };
            let mut net = Mlp::zeros(&[cond.len(), 6, 5, out], act);
            randomize(&mut net, &mut rng(seed), 1.0);
            let (cond, trans) = (cond.to_vec(), trans.to_vec());
            let (s, tape) = Default::default();
            Self { affine, net, cond, trans, bound: 1.5, s, tape }
        }
    }

    impl Coupling {
        /// The forward step of a backward pass: the kernel of direction `inverse` at `x`,
        /// recorded on the tape (and a log_prob-style call on the ordinary scratch after it,
        /// which must not disturb the tape).
        fn record(&mut self, x: ArrayView2<f64>, inverse: bool) {
            let mut ld = ndarray::Array1::zeros(x.nrows());
            let (n, c, t, b) = (&self.net, &self.cond[..], &self.trans[..], self.bound);
            let tape = self.tape.record(x.nrows());
            let mut y = x.to_owned();
            match (self.affine, inverse) {
                (true, true) => {
                    affine_coupling_inverse(n, c, t, b, y.view_mut(), ld.view_mut(), tape)
                }
                (true, false) => {
                    affine_coupling_forward(n, c, t, b, y.view_mut(), ld.view_mut(), tape)
                }
                (false, true) => {
                    additive_coupling_inverse(n, c, t, y.view_mut(), ld.view_mut(), tape)
                }
                (false, false) => {
                    additive_coupling_forward(n, c, t, y.view_mut(), ld.view_mut(), tape)
                }
            }
            let mut other = crate::layers::testutil::uniform(&mut rng(99), 3, x.ncols(), 5.0);
            let mut ld = ndarray::Array1::zeros(3);
            self.inverse(other.view_mut(), ld.view_mut());
        }
    }

    impl Layer for Coupling {
        type P = Mlp<f64>;
        fn params_mut(&mut self) -> &mut Mlp<f64> {
            &mut self.net
        }
        fn inverse(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
            let (n, c, t, s) = (&self.net, &self.cond[..], &self.trans[..], &mut self.s);
            if self.affine {
                affine_coupling_inverse(n, c, t, self.bound, x, ld, s);
            } else {
                additive_coupling_inverse(n, c, t, x, ld, s);
            }
        }
        fn forward(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
            let (n, c, t, s) = (&self.net, &self.cond[..], &self.trans[..], &mut self.s);
            if self.affine {
                affine_coupling_forward(n, c, t, self.bound, x, ld, s);
            } else {
                additive_coupling_forward(n, c, t, x, ld, s);
            }
        }
        fn backward(
            &mut self,
            x: ArrayView2<f64>,
            g: ArrayViewMut2<f64>,
            dld: ArrayView1<f64>,
            grad: &mut Mlp<f64>,
        ) {
            self.record(x, true);
            let (n, c, t, s) = (&self.net, &self.cond[..], &self.trans[..], &mut self.tape);
            if self.affine {
                affine_coupling_backward(n, c, t, self.bound, x, g, dld, grad, s);
            } else {
                additive_coupling_backward(n, c, t, x, g, dld, grad, s);
            }
        }
        fn forward_backward(
            &mut self,
            z: ArrayView2<f64>,
            g: ArrayViewMut2<f64>,
            dld: ArrayView1<f64>,
            grad: &mut Mlp<f64>,
        ) {
            self.record(z, false);
            let (n, c, t, s) = (&self.net, &self.cond[..], &self.trans[..], &mut self.tape);
            if self.affine {
                affine_coupling_forward_backward(n, c, t, self.bound, z, g, dld, grad, s);
            } else {
                additive_coupling_forward_backward(n, c, t, z, g, dld, grad, s);
            }
        }
    }

    #[test]
    fn affine_coupling_non_contiguous_columns() {
        for (i, act) in [Activation::Tanh, Activation::Elu(1.0)].into_iter().enumerate() {
            check_layer(&mut Coupling::new(true, act, &[2, 0], &[1, 3], 10 + i as u64), 4, 1);
        }
    }

    #[test]
    fn affine_coupling_odd_split() {
        check_layer(&mut Coupling::new(true, Activation::LeakyRelu(0.1), &[1], &[2, 0], 11), 3, 2);
        check_layer(&mut Coupling::new(true, Activation::Relu, &[0, 2], &[1], 12), 3, 3);
    }

    #[test]
    fn additive_coupling_non_contiguous_columns() {
        check_layer(&mut Coupling::new(false, Activation::Relu, &[2, 0], &[1, 3], 13), 4, 4);
        check_layer(&mut Coupling::new(false, Activation::Tanh, &[1], &[2, 0], 14), 3, 5);
    }

    #[test]
    fn soft_clamp_bounds_the_log_scale() {
        for a in [-1e6f64, -3.0, 0.0, 0.5, 1e6] {
            let (s, _) = soft_clamp(a, 2.0);
            assert!(s.abs() < 2.0 && s.signum() == if a == 0.0 { 1.0 } else { a.signum() });
        }
        assert!((soft_clamp(1e-9f64, 2.0).0 - 1e-9).abs() < 1e-15);
    }

    #[test]
    fn zero_last_layer_is_the_identity() {
        let net = Mlp::new(&[2, 8, 4], Activation::Relu, &mut rng(3), true);
        let x = crate::layers::testutil::uniform(&mut rng(4), 7, 4, 2.0);
        let (mut z, mut ld) = (x.clone(), ndarray::Array1::zeros(7));
        let mut s = CouplingScratch::default();
        affine_coupling_inverse(&net, &[2, 0], &[1, 3], 2.0, z.view_mut(), ld.view_mut(), &mut s);
        assert_eq!(z, x);
        assert!(ld.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn scratch_survives_batch_size_changes() {
        let mut c = Coupling::new(true, Activation::Tanh, &[0], &[1], 15);
        for n in [5, 2, 9] {
            let x = crate::layers::testutil::uniform(&mut rng(n as u64), n, 2, 2.0);
            crate::layers::testutil::check_round_trip(&mut c, &x);
        }
    }
}
