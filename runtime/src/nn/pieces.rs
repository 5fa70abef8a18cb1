//! A ReLU network of one input is piecewise linear in it: the first two layers of the
//! conditioner of a 2-D coupling (C1's and C3's `1 -> 64 -> 64 -> ...`) as one affine map per
//! piece of the input's line, so a row's second hidden layer costs one multiply-add per unit
//! instead of a 64 x 64 product.
//!
//! Unit `j` of the first layer, `relu(w_j x + b_j)`, is on for `x > t_j = -b_j / w_j` if
//! `w_j > 0` and for `x < t_j` if `w_j < 0`. Between two consecutive sorted breakpoints the
//! set of units that are on is fixed, so there the second layer's pre-activation is
//!
//! ```text
//! h2(x) = b2 + sum over on units j of (w_j x + b_j) W2[j, :] = x A[p] + B[p]
//! A[p] = sum over on j of w_j W2[j, :],   B[p] = b2 + sum over on j of b_j W2[j, :]
//! ```
//!
//! with `p` the number of breakpoints below `x`. With the units sorted by breakpoint, the
//! units on in piece `p` are the `w > 0` ones before position `p` and the `w < 0` ones from
//! `p` on, so `A` and `B` are a prefix sum plus a suffix sum (no subtractions, so no
//! cancellation beyond that of any order of the sum). The result is the dense product's up
//! to the order of the additions, except that an infinite or NaN weight of `W2` behind a unit
//! that is off adds nothing (the dense product's `0 * inf` is NaN).

use super::{Activation, Mlp};
use crate::real::Real;
use ndarray::{ArrayView2, ArrayViewMut2};

/// Rows from which [`Mlp::forward`] builds the pieces: building them costs about as much as
/// `H + 1` rows of the 64 x 64 product would (one axpy of a `W2` row per unit and piece
/// boundary, twice), far below that from a few dozen rows on.
pub(crate) const PIECES_MIN_ROWS: usize = 64;

/// Widest first hidden layer taken (the pieces' tables grow as its square).
const MAX_UNITS: usize = 256;

/// The first two layers of a one-input ReLU network, per piece of the input's line.
#[derive(Clone, Debug)]
pub(crate) struct Pieces<T> {
    /// The breakpoints `t_j` of the units with `w_j != 0`, ascending.
    breaks: Vec<T>,
    /// Width of the second layer.
    width: usize,
    /// `A[p]` and `B[p]`, `(breaks.len() + 1) x width` each, row-major.
    slope: Vec<T>,
    offset: Vec<T>,
    /// The [`Mlp::id`] of the network they were built from.
    id: u64,
}

impl<T: Real> Pieces<T> {
    /// The pieces of `net`, from `cache` if they were built from the same weights (the same
    /// [`Mlp::id`]), else built and left there. `None` where [`Pieces::of`] declines.
    pub(crate) fn cached<'c>(net: &Mlp<T>, cache: &'c mut Option<Self>) -> Option<&'c Self> {
        // The activation is a public field, outside the id: checked on every use.
        if !Self::fits(net) {
            return None;
        }
        if cache.as_ref().is_none_or(|p| p.id != net.id()) {
            *cache = Self::of(net);
        }
        cache.as_ref()
    }

    /// The pieces of `net`, or `None` where they do not apply: not a ReLU network, not one
    /// input, fewer than three layers (the second layer would be the output, and `forward`
    /// keeps no hidden layer to replace), too wide a first layer, or a non-finite weight or
    /// bias in the first layer or bias in the second (no breakpoints to sort). Built again
    /// after every training step, so kept cheap: measured, checking all of `W2` and sorting
    /// with a recomputed key were 60% of C1's log_prob when it was built per row tile.
    pub(crate) fn of(net: &Mlp<T>) -> Option<Self> {
        let [first, second, ..] = &net.layers[..] else { return None };
        let finite = |v: &T| v.f64().is_finite();
        if !Self::fits(net) || !first.w.iter().chain(&first.b).chain(&second.b).all(finite) {
            return None;
        }
        let (w1, b1) = (first.w.row(0), &first.b);
        // Units by breakpoint; units with w = 0 are constant (on iff b > 0): last, no break.
        let mut keyed: Vec<(bool, T, usize)> = (0..b1.len())
            .map(|j| {
                let constant = w1[j] == T::zero();
                (constant, if constant { T::zero() } else { -b1[j] / w1[j] }, j)
            })
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.f64().total_cmp(&b.1.f64())));
        let moving = keyed.iter().take_while(|k| !k.0).count();
        let breaks = keyed[..moving].iter().map(|k| k.1).collect();
        let order: Vec<usize> = keyed.iter().map(|k| k.2).collect();
        let (slope, offset) = super::simd(
            #[inline(always)]
            || tables(net, &order, moving),
        );
        Some(Self { breaks, width: second.b.len(), slope, offset, id: net.id() })
    }

    /// Whether `net` has the shape the pieces take: a ReLU network of one input, at least
    /// three layers and at most [`MAX_UNITS`] first-layer units.
    pub(crate) fn fits(net: &Mlp<T>) -> bool {
        net.act == Activation::Relu
            && net.layers.len() >= 3
            && net.layers[0].w.nrows() == 1
            && net.layers[0].b.len() <= MAX_UNITS
    }

    /// The [`Mlp::id`] of the network they were built from.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// [`Pieces::hidden`] of one input, under the CPU dispatch (the per-sample path).
    pub(crate) fn hidden_row(&self, x: T, out: &mut [T]) {
        super::simd(
            #[inline(always)]
            || self.hidden(x, out),
        )
    }

    /// [`Pieces::hidden`] of every row of the one-column `x` into the rows of `out`.
    pub(crate) fn hidden_rows(&self, x: ArrayView2<T>, mut out: ArrayViewMut2<T>) {
        super::simd(
            #[inline(always)]
            || {
                for (xr, mut or) in x.rows().into_iter().zip(out.rows_mut()) {
                    match or.as_slice_mut() {
                        Some(o) => self.hidden(xr[0], o),
                        None => {
                            let mut o = or.to_vec();
                            self.hidden(xr[0], &mut o);
                            or.iter_mut().zip(o).for_each(|(d, v)| *d = v);
                        }
                    }
                }
            },
        )
    }

    /// `out = relu(x A[p] + B[p])`: the network's second hidden layer at input `x`.
    #[inline(always)]
    pub(crate) fn hidden(&self, x: T, out: &mut [T]) {
        // Branch-free count (vectorises): a binary search mispredicted on random inputs.
        let p = self.breaks.iter().fold(0usize, |n, &t| n + usize::from(t < x));
        let at = p * self.width..(p + 1) * self.width;
        let zero = T::zero();
        for ((o, &a), &b) in out.iter_mut().zip(&self.slope[at.clone()]).zip(&self.offset[at]) {
            let v = x * a + b;
            *o = if v > zero { v } else { zero };
        }
    }
}

/// `A` and `B` of every piece: for the units in `order` (the first `moving` have
/// breakpoints, ascending), prefix sums over the `w > 0` units plus suffix sums over the
/// `w < 0` ones and the constant units that are on. Inlined into `simd`'s copies.
#[inline(always)]
fn tables<T: Real>(net: &Mlp<T>, order: &[usize], moving: usize) -> (Vec<T>, Vec<T>) {
    let (first, second) = (&net.layers[0], &net.layers[1]);
    let (w1, b1, w2, b2) = (first.w.row(0), &first.b, &second.w, &second.b);
    let width = b2.len();
    let pieces = moving + 1;
    let mut slope = vec![T::zero(); pieces * width];
    let mut offset = vec![T::zero(); pieces * width];
    // Suffix sums, from the last piece down: piece p has the w < 0 units at positions >= p.
    let (mut sa, mut sb) = (vec![T::zero(); width], b2.to_vec());
    for &j in &order[moving..] {
        if b1[j] > T::zero() {
            axpy(&mut sb, b1[j], w2.row(j));
        }
    }
    for p in (0..pieces).rev() {
        if p < moving && w1[order[p]] < T::zero() {
            let j = order[p];
            axpy(&mut sa, w1[j], w2.row(j));
            axpy(&mut sb, b1[j], w2.row(j));
        }
        slope[p * width..(p + 1) * width].copy_from_slice(&sa);
        offset[p * width..(p + 1) * width].copy_from_slice(&sb);
    }
    // Prefix sums, from the first piece up: piece p has the w > 0 units at positions < p.
    let (mut pa, mut pb) = (vec![T::zero(); width], vec![T::zero(); width]);
    for p in 0..pieces {
        if p > 0 && w1[order[p - 1]] > T::zero() {
            let j = order[p - 1];
            axpy(&mut pa, w1[j], w2.row(j));
            axpy(&mut pb, b1[j], w2.row(j));
        }
        let at = p * width..(p + 1) * width;
        slope[at.clone()].iter_mut().zip(&pa).for_each(|(s, &v)| *s = *s + v);
        offset[at].iter_mut().zip(&pb).for_each(|(s, &v)| *s = *s + v);
    }
    (slope, offset)
}

/// `y += a x` (over slices where `x` is contiguous, so that it vectorises).
#[inline(always)]
fn axpy<T: Real>(y: &mut [T], a: T, x: ndarray::ArrayView1<T>) {
    match x.as_slice() {
        Some(x) => y.iter_mut().zip(x).for_each(|(y, &x)| *y = *y + a * x),
        None => y.iter_mut().zip(x).for_each(|(y, &x)| *y = *y + a * x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::{randomize, rng, uniform};
    use crate::nn::MlpScratch;

    /// The pieces' second hidden layer against the dense forward pass, at random inputs and
    /// at every breakpoint, for widths with and without constant units.
    fn agree<T: Real>(sizes: &[usize], zero_units: usize, tol: f64) {
        let mut net = Mlp::<f64>::zeros(sizes, Activation::Relu);
        randomize(&mut net, &mut rng(90 + sizes[1] as u64), 1.0);
        for j in 0..zero_units {
            net.layers_mut()[0].w[[0, j]] = 0.0;
            net.layers_mut()[0].b[j] = if j % 2 == 0 { 0.5 } else { -0.5 };
        }
        let layers = net
            .layers
            .iter()
            .map(|l| super::super::Dense { w: l.w.mapv(T::of), b: l.b.mapv(T::of) });
        let net = Mlp::from_layers(layers.collect(), net.act);
        let pieces = Pieces::of(&net).expect("a one-input ReLU network");
        let mut xs: Vec<T> =
            uniform(&mut rng(91), 1, 200, 6.0).iter().copied().map(T::of).collect();
        xs.extend(pieces.breaks.iter().copied());
        xs.extend([T::of(-1e3), T::of(1e3), T::zero()]);
        let x = ndarray::Array2::from_shape_vec((xs.len(), 1), xs.clone()).unwrap();
        let relu = |a: ndarray::Array2<T>| a.mapv(|v| if v > T::zero() { v } else { T::zero() });
        let (l1, l2) = (&net.layers[0], &net.layers[1]);
        let want = relu(relu(x.dot(&l1.w) + &l1.b).dot(&l2.w) + &l2.b);
        let mut got = vec![T::zero(); sizes[2]];
        for (r, &xr) in xs.iter().enumerate() {
            pieces.hidden(xr, &mut got);
            for (g, w) in got.iter().zip(want.row(r)) {
                let scale = 1.0 + xr.f64().abs() + w.f64().abs();
                assert!(
                    (g.f64() - w.f64()).abs() <= tol * scale,
                    "{sizes:?} x = {xr:?}: {g:?} vs {w:?}"
                );
            }
        }
        // The batch forward pass takes the pieces from PIECES_MIN_ROWS rows on.
        let mut s = MlpScratch::default();
        net.forward(x.view(), &mut s);
        for ((g, w), &xr) in s.acts[1].rows().into_iter().zip(want.rows()).zip(&xs) {
            for (g, w) in g.iter().zip(w) {
                let scale = 1.0 + xr.f64().abs() + w.f64().abs();
                assert!((g.f64() - w.f64()).abs() <= tol * scale, "forward at {xr:?}: {g:?} {w:?}");
            }
        }
    }

    #[test]
    fn pieces_match_the_dense_layers() {
        agree::<f64>(&[1, 64, 64, 2], 0, 1e-12);
        agree::<f64>(&[1, 7, 5, 3], 3, 1e-12);
        agree::<f64>(&[1, 33, 100, 4, 2], 0, 1e-12);
        agree::<f32>(&[1, 64, 64, 2], 2, 1e-5);
    }

    /// A random 1 -> 16 -> 8 -> 2 ReLU network and 100 input rows (enough for the pieces).
    fn net_and_rows(seed: u64) -> (Mlp<f64>, ndarray::Array2<f64>) {
        let mut net = Mlp::<f64>::zeros(&[1, 16, 8, 2], Activation::Relu);
        randomize(&mut net, &mut rng(seed), 1.0);
        (net, uniform(&mut rng(seed + 1), 100, 1, 3.0))
    }

    /// A scratch's cached pieces are rebuilt when any weight of the first two layers changes
    /// (a training step between two forward passes).
    #[test]
    fn cached_pieces_follow_weight_changes() {
        let (mut net, x) = net_and_rows(95);
        let mut s = MlpScratch::default();
        let mut fresh = MlpScratch::default();
        for change in 0..4 {
            match change {
                1 => net.layers_mut()[1].w[[5, 3]] += 0.5,
                2 => net.layers_mut()[0].b[2] -= 0.25,
                3 => net.layers_mut()[1].b[7] += 1.0,
                _ => {}
            }
            net.forward(x.view(), &mut s);
            fresh.pieces = None;
            net.forward(x.view(), &mut fresh);
            assert_eq!(s.acts[1], fresh.acts[1], "after change {change}");
        }
    }

    /// Cached pieces are not used once the (public) activation field has changed.
    #[test]
    fn cached_pieces_follow_the_activation() {
        let (mut net, x) = net_and_rows(97);
        let mut s = MlpScratch::default();
        net.forward(x.view(), &mut s);
        assert!(s.pieces.is_some());
        net.act = Activation::Tanh;
        net.forward(x.view(), &mut s);
        let mut fresh = MlpScratch::default();
        net.forward(x.view(), &mut fresh);
        assert_eq!(s.acts[1], fresh.acts[1]);
    }

    /// Not taken where the network is not piecewise linear in one input, or its first layer
    /// carries NaN.
    #[test]
    fn declines_other_networks() {
        let one = |sizes: &[usize], act| Mlp::<f64>::zeros(sizes, act);
        assert!(Pieces::of(&one(&[1, 8, 8, 2], Activation::Relu)).is_some());
        assert!(Pieces::of(&one(&[2, 8, 8, 2], Activation::Relu)).is_none());
        assert!(Pieces::of(&one(&[1, 8, 8, 2], Activation::Tanh)).is_none());
        assert!(Pieces::of(&one(&[1, 8, 2], Activation::Relu)).is_none());
        let mut nan = one(&[1, 8, 8, 2], Activation::Relu);
        nan.layers_mut()[0].b[3] = f64::NAN;
        assert!(Pieces::of(&nan).is_none());
    }
}
