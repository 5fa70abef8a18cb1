//! MADE (Germain et al. 2015): an MLP whose weights are masked so that the raw parameters
//! computed for input `k` depend only on inputs of smaller degree.
//!
//! Every unit carries a degree. Inputs have degrees `1..=D` (a permutation, the layer's
//! autoregressive order); hidden units have degrees in `1..=D-1`. A hidden unit of degree `m`
//! sees the units of the previous layer of degree `<= m`; the output columns of input `k`
//! see the last hidden units of degree `< in_deg[k]`. Every pass multiplies the weights by the
//! mask, as zuko's and nflows' `MaskedLinear` do, so masked entries never reach the output and
//! get a zero gradient whatever a weights file holds. The masked entries stay parameters (the
//! counts match zuko's).

use crate::nn::{Activation, Mlp};
use crate::params::Params;
use crate::real::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};

/// A masked MLP: `sizes = [D, h1, .., hL, D * n_params]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Made<T> {
    pub net: Mlp<T>,
    /// The degree of input `k`: a permutation of `1..=D`.
    pub in_deg: Vec<usize>,
    /// The degrees of each hidden layer's units, nondecreasing, in `1..=D-1` (0 when D = 1).
    pub hidden_deg: Vec<Vec<usize>>,
    /// Raw transformer parameters per input: output column `k * n_params + j` is parameter
    /// `j` of input `k`.
    pub n_params: usize,
    /// One 0/1 matrix per dense layer, shaped like its weight.
    masks: Vec<Array2<T>>,
}

impl<T: Real> Made<T> {
    /// A MADE with PyTorch's default init (see [`Mlp::new`]); if `zero_last`, the output
    /// layer is zero, so the flow layer starts as the identity.
    pub fn new(
        sizes: &[usize],
        act: Activation,
        in_deg: &[usize],
        hidden_deg: &[&[usize]],
        n_params: usize,
        rng: &mut crate::FlowRng,
        zero_last: bool,
    ) -> Self {
        Self::with_net(Mlp::new(sizes, act, rng, zero_last), in_deg, hidden_deg, n_params)
    }

    /// A MADE of the given architecture with every parameter zero (a gradient accumulator).
    pub fn zeros(
        sizes: &[usize],
        act: Activation,
        in_deg: &[usize],
        hidden_deg: &[&[usize]],
        n_params: usize,
    ) -> Self {
        Self::with_net(Mlp::zeros(sizes, act), in_deg, hidden_deg, n_params)
    }

    fn with_net(net: Mlp<T>, in_deg: &[usize], hidden_deg: &[&[usize]], n_params: usize) -> Self {
        let d = in_deg.len();
        let widths: Vec<usize> = net.layers.iter().map(|l| l.b.len()).collect();
        // The architecture comes from the compiler, never from user data: a mismatch is a bug.
        assert_eq!(widths.len(), hidden_deg.len() + 1, "Made: one degree list per hidden layer");
        assert_eq!(net.layers[0].w.nrows(), d, "Made: input width");
        assert_eq!(widths[widths.len() - 1], d * n_params, "Made: output width");
        for (h, w) in hidden_deg.iter().zip(&widths) {
            assert_eq!(h.len(), *w, "Made: hidden degree count");
        }
        let hidden_deg: Vec<Vec<usize>> = hidden_deg.iter().map(|h| h.to_vec()).collect();
        let masks = (0..widths.len())
            .map(|i| layer_mask(in_deg, &hidden_deg, n_params, i, widths[i]))
            .collect();
        Self { net, in_deg: in_deg.to_vec(), hidden_deg, n_params, masks }
    }

    /// The number of inputs (and of transformed dimensions).
    pub fn dim(&self) -> usize {
        self.in_deg.len()
    }

    /// Writes the masked network into `dst`, reusing its buffers when the shapes match.
    pub(crate) fn masked_into<'a>(&self, dst: &'a mut Option<Mlp<T>>) -> &'a Mlp<T> {
        let eff = dst.get_or_insert_with(|| self.net.clone());
        if eff.layers.len() != self.net.layers.len()
            || eff.layers.iter().zip(&self.net.layers).any(|(a, b)| a.w.dim() != b.w.dim())
        {
            *eff = self.net.clone();
        }
        eff.act = self.net.act;
        for ((e, l), m) in eff.layers.iter_mut().zip(&self.net.layers).zip(&self.masks) {
            Zip::from(&mut e.w).and(&l.w).and(m).for_each(|e, &w, &m| *e = w * m);
            e.b.assign(&l.b);
        }
        eff
    }

    /// Adds the masked gradient of the masked network, `geff`, into `grad`'s network.
    pub(crate) fn add_masked_grad(&self, geff: &Mlp<T>, grad: &mut Made<T>) {
        for ((g, e), m) in grad.net.layers.iter_mut().zip(&geff.layers).zip(&self.masks) {
            Zip::from(&mut g.w).and(&e.w).and(m).for_each(|g, &e, &m| *g += e * m);
            g.b += &e.b;
        }
    }
}

/// The mask of dense layer `i` (`out` columns): 1 where the target unit may see the source.
fn layer_mask<T: Real>(
    in_deg: &[usize],
    hidden: &[Vec<usize>],
    n_params: usize,
    i: usize,
    out: usize,
) -> Array2<T> {
    let src: &[usize] = if i == 0 { in_deg } else { &hidden[i - 1] };
    let to_output = i == hidden.len();
    Array2::from_shape_fn((src.len(), out), |(r, c)| {
        let seen = if to_output {
            // Input k's parameters see only what depends on inputs of smaller degree.
            let k = c / n_params.max(1);
            in_deg.get(k).is_some_and(|&dk| src[r] < dk)
        } else {
            src[r] <= hidden[i][c]
        };
        if seen {
            T::one()
        } else {
            T::zero()
        }
    })
}

/// Balanced hidden degrees for a MADE with `d` inputs whose degrees are `order`: unit `k` of
/// a layer of `h` units gets `1 + k (d - 1) / h` (nondecreasing, in `1..=d-1`), or 0 when
/// `d == 1` (those units see no input and feed the only output).
pub fn made_degrees(d: usize, order: &[usize], hidden: &[usize]) -> Vec<Vec<usize>> {
    debug_assert_eq!(order.len(), d, "made_degrees: one degree per input");
    hidden
        .iter()
        .map(|&h| (0..h).map(|k| if d > 1 { 1 + k * (d - 1) / h } else { 0 }).collect())
        .collect()
}

impl<T: Real> Params<T> for Made<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &[T])) {
        self.net.visit(prefix, f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        self.net.visit_mut(prefix, f);
    }
}

/// The gradient with respect to a network's input only (no parameter gradients), after
/// `net.forward`, whose layer outputs are `acts`: `dx = dout . J`. `deltas` are buffers.
pub(crate) fn input_vjp<T: Real>(
    net: &Mlp<T>,
    acts: &[Array2<T>],
    dout: ArrayView2<T>,
    deltas: &mut Vec<Array2<T>>,
    mut dx: ArrayViewMut2<T>,
) {
    use ndarray::linalg::general_mat_mul;
    let nl = net.layers.len();
    deltas.resize_with(nl, || Array2::zeros((0, 0)));
    for i in (0..nl).rev() {
        let (below, here) = deltas.split_at_mut(i);
        let delta = if i == nl - 1 { dout } else { here[0].view() };
        let w = net.layers[i].w.t();
        if i == 0 {
            general_mat_mul(T::one(), &delta, &w, T::zero(), &mut dx);
        } else {
            let prev = &mut below[i - 1];
            crate::nn::resize(prev, delta.nrows(), w.ncols());
            general_mat_mul(T::one(), &delta, &w, T::zero(), prev);
            net.act.mul_derivative(prev.view_mut(), acts[i - 1].view());
        }
    }
}
