//! One row through an [`Mlp`]: the per-sample API's conditioner pass (`log_prob_one`).
//!
//! A batch of one row through [`Mlp::forward`] pays for ndarray views, a product call per
//! layer and a `Vec` of output views; here the row lives in two reused buffers and each layer
//! is one pass over its weights. `w` is stored `in x out` with contiguous rows, so
//! `y = x w + b` streams those rows in order: `y[j0..j0 + W] += x[i] * w[i, j0..j0 + W]`,
//! with the W outputs held in registers over the whole inner index (no transposed copy).

use super::{simd, Activation, Dense, Mlp};
use crate::real::Real;

/// Buffers of [`Mlp::forward_row`], reused across calls: once they have grown to the widest
/// layer, a row allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct RowScratch<T> {
    /// The network's input (couplings gather their conditioning columns here).
    pub(crate) input: Vec<T>,
    /// Layer `i` writes its output to `bufs[(i + 1) % 2]`.
    bufs: [Vec<T>; 2],
}

impl<T: Real> Mlp<T> {
    /// The network's output for one input row: [`Mlp::forward`] of a one-row batch, up to
    /// the order of the floating-point sums.
    pub fn forward_row<'s>(&self, x: &[T], s: &'s mut RowScratch<T>) -> &'s [T] {
        s.input.clear();
        s.input.extend_from_slice(x);
        self.forward_input_row(s)
    }

    /// [`Mlp::forward_row`] of `s.input`. A layerless network returns its input.
    pub(crate) fn forward_input_row<'s>(&self, s: &'s mut RowScratch<T>) -> &'s [T] {
        let nl = self.layers.len();
        if nl == 0 {
            return &s.input;
        }
        debug_assert_eq!(s.input.len(), self.layers[0].w.nrows(), "Mlp::forward_row: input width");
        let RowScratch { input, bufs } = &mut *s;
        simd(
            #[inline(always)]
            || self.forward_row_body(input, bufs),
        );
        &s.bufs[nl % 2]
    }

    /// The layers, ping-ponging between the two buffers; inlined into `simd`'s CPU-specific
    /// copies.
    #[inline(always)]
    fn forward_row_body(&self, input: &[T], bufs: &mut [Vec<T>; 2]) {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let [even, odd] = &mut *bufs;
            let (src, dst) = if i % 2 == 0 { (&*even, odd) } else { (&*odd, even) };
            let x = if i == 0 { input } else { &src[..] };
            dst.resize(layer.b.len(), T::zero());
            dense_row(layer, x, dst);
            if i < last {
                self.act.apply_slice(dst);
            }
        }
    }
}

impl Activation {
    /// Applies the activation in place to a slice (the match is outside the loop, so each
    /// arm's loop vectorizes).
    #[inline(always)]
    pub(crate) fn apply_slice<T: Real>(self, y: &mut [T]) {
        let zero = T::zero();
        match self {
            Activation::Relu => y.iter_mut().for_each(|v| *v = (*v).max(zero)),
            Activation::Tanh => y.iter_mut().for_each(|v| *v = (*v).tanh()),
            Activation::LeakyRelu(slope) => {
                let slope = T::of(slope);
                y.iter_mut().for_each(|v| *v = if *v > zero { *v } else { *v * slope });
            }
            Activation::Elu(alpha) => {
                let alpha = T::of(alpha);
                y.iter_mut().for_each(|v| *v = if *v > zero { *v } else { alpha * (*v).exp_m1() });
            }
        }
    }
}

/// `y = x w + b` for one row. The block width is 256 bytes of outputs (8 AVX registers:
/// enough independent sums to hide the add latency, few enough to leave registers for `w`).
#[inline(always)]
fn dense_row<T: Real>(layer: &Dense<T>, x: &[T], y: &mut [T]) {
    let (w, b) = match (layer.w.as_slice(), layer.b.as_slice()) {
        (Some(w), Some(b)) => (w, b),
        // The fields are public: a caller may have left them strided.
        _ => return dense_row_strided(layer, x, y),
    };
    if core::mem::size_of::<T>() == 4 {
        dense_row_blocked::<T, 64>(w, b, x, y)
    } else {
        dense_row_blocked::<T, 32>(w, b, x, y)
    }
}

/// `y = x w + b` by indexing, for weights not in standard layout.
fn dense_row_strided<T: Real>(layer: &Dense<T>, x: &[T], y: &mut [T]) {
    for (j, yj) in y.iter_mut().enumerate() {
        *yj =
            layer.b[j] + x.iter().enumerate().fold(T::zero(), |s, (i, &v)| s + v * layer.w[[i, j]]);
    }
}

/// Full blocks of W outputs accumulate in registers over the inner index; the last
/// `n mod W` outputs (a conditioner's narrow output layer) are dot products down the
/// columns of `w`, each split into 8 partial sums so they do not wait on one another.
#[inline(always)]
fn dense_row_blocked<T: Real, const W: usize>(w: &[T], b: &[T], x: &[T], y: &mut [T]) {
    let n = b.len();
    debug_assert_eq!(w.len(), x.len() * n, "dense_row: weight shape");
    let mut j0 = 0;
    while j0 + W <= n {
        let mut acc = <[T; W]>::try_from(&b[j0..j0 + W]).expect("W outputs");
        for (i, &xi) in x.iter().enumerate() {
            let row = <&[T; W]>::try_from(&w[i * n + j0..i * n + j0 + W]).expect("W weights");
            for t in 0..W {
                acc[t] += xi * row[t];
            }
        }
        y[j0..j0 + W].copy_from_slice(&acc);
        j0 += W;
    }
    for j in j0..n {
        let mut part = [T::zero(); 8];
        let mut chunks = x.chunks_exact(8);
        for (c, xs) in chunks.by_ref().enumerate() {
            for (u, &xu) in xs.iter().enumerate() {
                part[u] += xu * w[(8 * c + u) * n + j];
            }
        }
        let done = x.len() - chunks.remainder().len();
        for (u, &xu) in chunks.remainder().iter().enumerate() {
            part[u] += xu * w[(done + u) * n + j];
        }
        y[j] = b[j] + part.iter().fold(T::zero(), |s, &p| s + p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::{randomize, rng, uniform};
    use crate::nn::MlpScratch;

    /// Every activation, widths with and without full blocks and tails (1 -> 64 -> 64 -> 2 is
    /// C1's conditioner), and a layerless network; checked against the batch forward pass.
    fn check<T: Real>(tol: f64) {
        let shapes: [&[usize]; 5] =
            [&[1, 64, 64, 2], &[3, 7, 5, 2], &[5, 100, 33], &[2, 70, 4], &[4]];
        let acts =
            [Activation::Relu, Activation::Tanh, Activation::LeakyRelu(0.2), Activation::Elu(0.7)];
        let mut s = RowScratch::default();
        for (k, sizes) in shapes.iter().enumerate() {
            for (a, &act) in acts.iter().enumerate() {
                let mut net = Mlp::<f64>::zeros(sizes, act);
                randomize(&mut net, &mut rng(40 + k as u64), 1.0);
                let net = cast::<T>(&net);
                let x = uniform(&mut rng(50 + a as u64), 3, sizes[0], 2.0).mapv(T::of);
                let mut batch = MlpScratch::default();
                net.forward(x.view(), &mut batch);
                let want = batch.acts.last().cloned().unwrap_or_else(|| x.clone());
                for (r, xr) in x.rows().into_iter().enumerate() {
                    let got = net.forward_row(xr.as_slice().unwrap(), &mut s);
                    assert_eq!(got.len(), want.ncols(), "{sizes:?} width");
                    for (g, w) in got.iter().zip(want.row(r)) {
                        let err = (g.f64() - w.f64()).abs() / (1.0 + w.f64().abs());
                        assert!(err <= tol, "{sizes:?} {act:?} row {r}: {g:?} vs {w:?}");
                    }
                }
            }
        }
    }

    fn cast<T: Real>(net: &Mlp<f64>) -> Mlp<T> {
        let layers =
            net.layers.iter().map(|l| Dense { w: l.w.mapv(T::of), b: l.b.mapv(T::of) }).collect();
        Mlp { layers, act: net.act }
    }

    #[test]
    fn rows_match_the_batch_forward_pass() {
        check::<f64>(1e-12);
        check::<f32>(1e-5);
    }
}
