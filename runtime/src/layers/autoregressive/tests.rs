//! Autoregressive kernel tests (f64): the masks' dependency structure read off finite-
//! difference Jacobians, round trips and log-determinants, both backward kernels against
//! finite differences, and the fast solve against D full network passes.

use super::*;
use crate::layers::testutil::{assert_close, check_layer, flatten, randomize, rng, uniform, Layer};
use crate::nn::Activation;
use crate::params::Params;
use crate::transform::{RqSpline, SoftAffine};

const D: usize = 5;
const HIDDEN: [usize; 2] = [7, 6];
/// The MADE's inputs among 7 physical columns, out of order.
const COLS: [usize; D] = [6, 0, 3, 5, 1];

fn orders() -> [Vec<usize>; 3] {
    [vec![1, 2, 3, 4, 5], vec![5, 4, 3, 2, 1], vec![3, 5, 1, 4, 2]]
}

/// A MADE with balanced degrees and every parameter drawn from `(-scale, scale)`.
fn made(order: &[usize], hidden: &[usize], np: usize, act: Activation, seed: u64) -> Made<f64> {
    let d = order.len();
    let hd = made_degrees(d, order, hidden);
    let hd: Vec<&[usize]> = hd.iter().map(|h| &h[..]).collect();
    let sizes: Vec<usize> = [d].into_iter().chain(hidden.iter().copied()).chain([d * np]).collect();
    let mut m = Made::zeros(&sizes, act, order, &hd, np);
    randomize(&mut m, &mut rng(seed), 0.8);
    m
}

/// The MADE's raw parameters for one row `x` (length D, MADE order).
fn made_row(m: &Made<f64>, x: &[f64]) -> Vec<f64> {
    // The masked network reads and writes in degree order.
    let (mut s, mut ord) = (crate::nn::MlpScratch::default(), Vec::new());
    m.sorted_cols(&(0..x.len()).collect::<Vec<_>>(), &mut ord);
    let xs = Array2::from_shape_fn((1, x.len()), |(_, q)| x[ord[q]]);
    m.masked_into(&mut None, false).forward(xs.view(), &mut s);
    let (out, np) = (s.acts.last().unwrap(), m.n_params);
    (0..out.ncols())
        .map(|c| out[[0, ord.iter().position(|&k| k == c / np).unwrap() * np + c % np]])
        .collect()
}

/// Which direction a [`Flow`] under test treats as normalizing.
#[derive(Clone, Copy)]
enum Norm {
    Apply,
    Solve,
}

/// One autoregressive layer, normalizing direction `ar_apply` (MAF) or `ar_solve` (IAF).
struct Flow<Tr> {
    tr: Tr,
    made: Made<f64>,
    cols: Vec<usize>,
    norm: Norm,
    s: ArScratch<f64>,
    tape: Tape<ArScratch<f64>>,
    /// How the backward steps leave the gradient (the layer checks accumulate).
    out: GradOut,
}

impl<Tr: Transformer<f64>> Flow<Tr> {
    fn new(tr: Tr, made: Made<f64>, cols: &[usize], norm: Norm) -> Self {
        let (s, tape) = Default::default();
        Self { tr, made, cols: cols.to_vec(), norm, s, tape, out: GradOut::Add }
    }

    /// The forward step of a backward pass at `x` (`ar_apply` if `apply`, else `ar_solve`),
    /// recorded on the tape; then a call on other rows through the ordinary scratch, which
    /// must not disturb what the backward kernel reads.
    fn record(&mut self, x: ArrayView2<f64>, apply: bool) -> &mut Tape<ArScratch<f64>> {
        let (mut y, mut ld) = (x.to_owned(), Array1::zeros(x.nrows()));
        let (tr, m, c, t) = (&self.tr, &self.made, &self.cols[..], self.tape.record(x.nrows()));
        match apply {
            true => ar_apply(tr, m, c, y.view_mut(), ld.view_mut(), t),
            false => ar_solve(tr, m, c, y.view_mut(), ld.view_mut(), t),
        }
        let mut other = uniform(&mut rng(99), 3, x.ncols(), 0.5);
        self.apply(other.view_mut(), Array1::zeros(3).view_mut());
        &mut self.tape
    }
    fn apply(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
        ar_apply(&self.tr, &self.made, &self.cols, x, ld, &mut self.s);
    }
    fn solve(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
        ar_solve(&self.tr, &self.made, &self.cols, x, ld, &mut self.s);
    }
}

impl<Tr: Transformer<f64>> Layer for Flow<Tr> {
    type P = Made<f64>;
    fn params_mut(&mut self) -> &mut Made<f64> {
        &mut self.made
    }
    fn inverse(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
        match self.norm {
            Norm::Apply => self.apply(x, ld),
            Norm::Solve => self.solve(x, ld),
        }
    }
    fn forward(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
        match self.norm {
            Norm::Apply => self.solve(x, ld),
            Norm::Solve => self.apply(x, ld),
        }
    }
    fn backward(
        &mut self,
        x_in: ArrayView2<f64>,
        g: ArrayViewMut2<f64>,
        dld: ArrayView1<f64>,
        grad: &mut Made<f64>,
    ) {
        let apply = matches!(self.norm, Norm::Apply);
        self.record(x_in, apply);
        let (tr, m, c, s) = (&self.tr, &self.made, &self.cols[..], &mut self.tape);
        match self.norm {
            Norm::Apply => ar_apply_backward(tr, m, c, x_in, g, dld, grad, s, self.out),
            Norm::Solve => ar_solve_backward(tr, m, c, x_in, g, dld, grad, s, self.out),
        }
    }
    /// The generative direction is the other kernel, so its backward is the other backward.
    fn forward_backward(
        &mut self,
        z_in: ArrayView2<f64>,
        g: ArrayViewMut2<f64>,
        dld: ArrayView1<f64>,
        grad: &mut Made<f64>,
    ) {
        let apply = matches!(self.norm, Norm::Solve);
        self.record(z_in, apply);
        let (tr, m, c, s) = (&self.tr, &self.made, &self.cols[..], &mut self.tape);
        match self.norm {
            Norm::Apply => ar_solve_backward(tr, m, c, z_in, g, dld, grad, s, self.out),
            Norm::Solve => ar_apply_backward(tr, m, c, z_in, g, dld, grad, s, self.out),
        }
    }
}

/// Round trip, log-det against the FD Jacobian and gradients, in both roles.
fn check_both<Tr: Transformer<f64>>(
    tr: &Tr,
    m: &Made<f64>,
    cols: &[usize],
    width: usize,
    seed: u64,
) {
    for norm in [Norm::Apply, Norm::Solve] {
        check_layer(&mut Flow::new(tr.clone(), m.clone(), cols, norm), width, seed);
    }
}

#[test]
fn soft_affine_layers_invert_and_differentiate() {
    let tr = SoftAffine { bound: 3.0 };
    for (i, order) in orders().iter().enumerate() {
        let m = made(order, &HIDDEN, 2, Activation::Tanh, 10 + i as u64);
        check_both(&tr, &m, &COLS, 7, 20 + i as u64);
    }
}

#[test]
fn wide_made_skips_masked_blocks_exactly() {
    // Layers wider than a block (32 columns): several blocks per layer, each reading its own
    // source prefix, in every product of both roles (outputs: 20 inputs x 2 parameters).
    let cols: Vec<usize> = (0..20).rev().collect();
    let order: Vec<usize> = (1..=20).map(|k| (k * 7) % 20 + 1).collect();
    let m = made(&order, &[40, 36], 2, Activation::Relu, 60);
    assert!(m.blocks().iter().all(|b| b.len() >= 2), "{:?}", m.blocks());
    assert!(m.blocks()[0][0].k < 20, "the first block skips inputs: {:?}", m.blocks()[0]);
    check_both(&SoftAffine { bound: 3.0 }, &m, &cols, 20, 61);
}

#[test]
fn rq_spline_layers_invert_and_differentiate() {
    let tr = RqSpline { bins: 4, bound: 3.0 };
    for (i, order) in orders().iter().enumerate() {
        let m = made(order, &HIDDEN, 11, Activation::Relu, 30 + i as u64);
        check_both(&tr, &m, &COLS, 7, 40 + i as u64);
    }
}

#[test]
fn one_dimension_and_no_hidden_layers() {
    let tr = SoftAffine { bound: 3.0 };
    // D = 1: hidden degrees 0, the parameters are constants of the network.
    let m = made(&[1], &[4, 3], 2, Activation::Elu(1.0), 50);
    assert!(m.hidden_deg.iter().flatten().all(|&m| m == 0));
    check_both(&tr, &m, &[1], 2, 51);
    // No hidden layers: one masked linear map. Weights at half the usual size: the solve's
    // image of a linear chain of scales is otherwise so steep (input gradients ~1e3) that
    // central differences lose the digits the comparison needs.
    for (i, order) in orders().iter().enumerate() {
        let mut m = made(order, &[], 2, Activation::Relu, 52 + i as u64);
        m.visit_mut("", &mut |_, _, d| d.iter_mut().for_each(|v| *v *= 0.5));
        check_both(&tr, &m, &COLS, 7, 55 + i as u64);
        let tr = RqSpline { bins: 4, bound: 3.0 };
        let mut m = made(order, &[], 11, Activation::Relu, 58);
        m.visit_mut("", &mut |_, _, d| d.iter_mut().for_each(|v| *v *= 0.5));
        check_both(&tr, &m, &COLS, 7, 59);
    }
}

/// The central-difference Jacobian of `f` (rows: outputs) at `x`.
fn fd_jacobian(x: &[f64], mut f: impl FnMut(&[f64]) -> Vec<f64>) -> Array2<f64> {
    let h = 1e-5;
    let m = f(x).len();
    let mut jac = Array2::zeros((m, x.len()));
    let mut xp = x.to_vec();
    for j in 0..x.len() {
        xp[j] = x[j] + h;
        let fp = f(&xp);
        xp[j] = x[j] - h;
        let fm = f(&xp);
        xp[j] = x[j];
        for i in 0..m {
            jac[[i, j]] = (fp[i] - fm[i]) / (2.0 * h);
        }
    }
    jac
}

#[test]
fn made_outputs_depend_only_on_earlier_inputs() {
    for (i, order) in orders().iter().enumerate() {
        for hidden in [&HIDDEN[..], &[9][..], &[]] {
            let np = 3;
            let m = made(order, hidden, np, Activation::Tanh, 60 + i as u64);
            let x: Vec<f64> = uniform(&mut rng(70), 1, D, 2.0).iter().copied().collect();
            let jac = fd_jacobian(&x, |x| made_row(&m, x));
            for ((c, k), &v) in jac.indexed_iter() {
                let out_deg = order[c / np];
                if order[k] >= out_deg {
                    assert_eq!(v, 0.0, "output {c} (degree {out_deg}) sees input {k}");
                } else if out_deg == order[k] + 1 {
                    // The immediately preceding input always reaches through (dense enough).
                    assert!(v.abs() > 1e-9, "output {c} misses input {k}");
                }
            }
        }
    }
}

#[test]
fn flow_jacobian_is_triangular_in_degree_order() {
    let tr = RqSpline { bins: 4, bound: 3.0 };
    for (i, order) in orders().iter().enumerate() {
        let mut f = Flow::new(
            tr,
            made(order, &HIDDEN, 11, Activation::Relu, 80 + i as u64),
            &[0, 1, 2, 3, 4],
            Norm::Apply,
        );
        let x: Vec<f64> = uniform(&mut rng(81), 1, D, 2.0).iter().copied().collect();
        let jac = fd_jacobian(&x, |x| {
            let mut y = Array2::from_shape_vec((1, D), x.to_vec()).unwrap();
            f.apply(y.view_mut(), Array1::zeros(1).view_mut());
            y.iter().copied().collect()
        });
        for ((k, j), &v) in jac.indexed_iter() {
            if order[j] > order[k] {
                assert_eq!(v, 0.0, "y{k} depends on a later x{j}");
            }
        }
    }
}

/// The mask of dense layer `i`, recomputed from the degrees.
fn mask_of(m: &Made<f64>, i: usize) -> Array2<bool> {
    let (w, np, last) = (&m.net().layers()[i].w, m.n_params, m.net().layers().len() - 1);
    let src = if i == 0 { &m.in_deg } else { &m.hidden_deg[i - 1] };
    Array2::from_shape_fn(w.dim(), |(r, c)| {
        if i == last {
            src[r] < m.in_deg[c / np]
        } else {
            src[r] <= m.hidden_deg[i][c]
        }
    })
}

#[test]
fn masked_weights_get_exactly_zero_gradient_and_no_influence() {
    let tr = SoftAffine { bound: 3.0 };
    let order = &orders()[2];
    let m = made(order, &HIDDEN, 2, Activation::Relu, 90);
    let x = uniform(&mut rng(91), 6, 7, 2.0);
    let (g0, dld) = (uniform(&mut rng(92), 6, 7, 1.0), Array1::from_elem(6, 0.7));
    // Garbage in every masked entry, infinities included, changes nothing (the masked
    // network of a staircase mask copies only the entries it lets through).
    assert!(m.all_staircase());
    let mut noisy = m.clone();
    for i in 0..noisy.net().layers().len() {
        let mask = mask_of(&m, i);
        Zip::from(&mut noisy.net_mut().layers_mut()[i].w).and(&mask).for_each(|w, &k| {
            *w = if k {
                *w
            } else if *w > 0.0 {
                f64::INFINITY
            } else {
                1e3
            }
        });
    }
    for norm in [Norm::Apply, Norm::Solve] {
        let mut outs = Vec::new();
        for made in [&m, &noisy] {
            let mut f = Flow::new(tr, made.clone(), &COLS, norm);
            let (mut y, mut ld) = (x.clone(), Array1::zeros(6));
            f.inverse(y.view_mut(), ld.view_mut());
            let mut grad = Made::zeros(&[5, 7, 6, 10], Activation::Relu, order, &hd(made), 2);
            let mut g = g0.clone();
            f.backward(x.view(), g.view_mut(), dld.view(), &mut grad);
            for (i, l) in grad.net().layers().iter().enumerate() {
                let mask = mask_of(&m, i);
                assert!(Zip::from(&l.w).and(&mask).all(|&g, &k| k || g == 0.0), "layer {i}");
                assert!(l.w.iter().any(|&g| g != 0.0));
            }
            outs.push((y, ld, g, flatten(&grad)));
        }
        assert_eq!(outs[0], outs[1]);
    }
}

fn hd(m: &Made<f64>) -> Vec<&[usize]> {
    m.hidden_deg.iter().map(|h| &h[..]).collect()
}

/// `x = solve(y)` by D full passes: after pass i the inputs of the i lowest degrees are exact.
fn naive_solve<Tr: Transformer<f64>>(
    tr: &Tr,
    m: &Made<f64>,
    y: &Array2<f64>,
) -> (Array2<f64>, Array1<f64>) {
    let (n, d, np) = (y.nrows(), y.ncols(), m.n_params);
    let mut x = y.clone();
    let mut ld = Array1::zeros(n);
    for _ in 0..d {
        for r in 0..n {
            let p = made_row(m, x.row(r).as_slice().unwrap());
            ld[r] = 0.0;
            for k in 0..d {
                let (v, l) = tr.invert(y[[r, k]], &p[k * np..(k + 1) * np]);
                x[[r, k]] = v;
                ld[r] += l;
            }
        }
    }
    (x, ld)
}

#[test]
fn fast_solve_matches_the_naive_solve_across_tiles() {
    let tr = RqSpline { bins: 4, bound: 3.0 };
    let cols: Vec<usize> = (0..D).collect();
    for (i, order) in orders().iter().enumerate() {
        let m = made(order, &HIDDEN, 11, Activation::LeakyRelu(0.1), 100 + i as u64);
        let mut s = ArScratch::default();
        // 17 and 23 rows: row quads and 1 or 3 rows left over; 1100: the two-thread split of
        // large batches, at an odd tile boundary.
        for n in [1, 17, 23, 100, 1100] {
            let y = uniform(&mut rng(n as u64), n, D, 2.5);
            let (want, want_ld) = naive_solve(&tr, &m, &y);
            let (mut x, mut ld) = (y.clone(), Array1::zeros(n));
            ar_solve(&tr, &m, &cols, x.view_mut(), ld.view_mut(), &mut s);
            assert_close("solve", x.as_slice().unwrap(), want.as_slice().unwrap(), 1e-12);
            assert_close("solve ld", ld.as_slice().unwrap(), want_ld.as_slice().unwrap(), 1e-12);
        }
    }
}

#[test]
fn degrees_and_parameter_counts_follow_zuko() {
    assert_eq!(made_degrees(5, &[1, 2, 3, 4, 5], &[7]), vec![vec![1, 1, 2, 2, 3, 3, 4]]);
    assert_eq!(made_degrees(1, &[1], &[3]), vec![vec![0, 0, 0]]);
    let order: Vec<usize> = (1..=64).collect();
    let hd = made_degrees(64, &order, &[256, 256]);
    assert!(hd.iter().all(|h| h.windows(2).all(|w| w[0] <= w[1]) && h[0] == 1 && h[255] == 63));
    let hd: Vec<&[usize]> = hd.iter().map(|h| &h[..]).collect();
    let m = Made::<f32>::zeros(&[64, 256, 256, 128], Activation::Relu, &order, &hd, 2);
    assert_eq!(m.count(), 115_328);
    let mut names = Vec::new();
    m.visit("maf0", &mut |n, _, _| names.push(n));
    assert_eq!(names[..2], ["maf0.0.weight".to_string(), "maf0.0.bias".to_string()]);
}

#[test]
fn zero_output_layer_is_the_identity_and_scratch_is_reused() {
    let order = &orders()[1];
    let hd = made_degrees(D, order, &HIDDEN);
    let hd: Vec<&[usize]> = hd.iter().map(|h| &h[..]).collect();
    let m = Made::<f64>::new(&[5, 7, 6, 10], Activation::Relu, order, &hd, 2, &mut rng(3), true);
    let tr = SoftAffine { bound: 3.0 };
    let mut s = ArScratch::default();
    for n in [4, 40, 4] {
        let x = uniform(&mut rng(n as u64), n, 7, 2.0);
        let (mut y, mut ld) = (x.clone(), Array1::zeros(n));
        ar_apply(&tr, &m, &COLS, y.view_mut(), ld.view_mut(), &mut s);
        ar_solve(&tr, &m, &COLS, y.view_mut(), ld.view_mut(), &mut s);
        assert_eq!((y, ld), (x, Array1::zeros(n)));
    }
}

#[test]
fn a_reused_scratch_sees_every_parameter_change() {
    // The scratch keeps the masked network and the solve's plan between calls; a change
    // through `Params` (what training and weight loading use) or `net_mut` must reach them.
    let tr = SoftAffine { bound: 3.0 };
    let mut m = made(&orders()[2], &HIDDEN, 2, Activation::Tanh, 7);
    let x = uniform(&mut rng(8), 6, 7, 2.0);
    let run = |m: &Made<f64>, s: &mut ArScratch<f64>| {
        let (mut y, mut ld) = (x.clone(), Array1::zeros(6));
        ar_apply(&tr, m, &COLS, y.view_mut(), ld.view_mut(), s);
        let (mut z, mut lz) = (x.clone(), Array1::zeros(6));
        ar_solve(&tr, m, &COLS, z.view_mut(), lz.view_mut(), s);
        (y, ld, z, lz)
    };
    let mut s = ArScratch::default();
    let before = run(&m, &mut s);
    assert_eq!(run(&m, &mut s), before, "cached: same parameters, same result");
    m.visit_mut("", &mut |_, _, d| d.iter_mut().for_each(|v| *v *= 1.5));
    let after = run(&m, &mut s);
    assert_ne!(after, before);
    assert_eq!(after, run(&m, &mut ArScratch::default()), "after a Params change");
    m.net_mut().layers_mut()[0].b.fill(0.25);
    assert_eq!(run(&m, &mut s), run(&m, &mut ArScratch::default()), "after net_mut");
}

/// A scratch's masked network, rebuilt for new values (its masked entries left as they were)
/// or for another MADE of the same shapes and other masks, equals one built from nothing.
#[test]
fn rebuilt_masked_networks_equal_fresh_ones() {
    let [natural, reversed, _] = orders();
    let mut a = made(&natural, &HIDDEN, 2, Activation::Relu, 95);
    let b = made(&reversed, &HIDDEN, 2, Activation::Relu, 96);
    let (mut dst, mut built) = (None, made::Built::default());
    for step in 0..3 {
        for m in [&a, &b, &b, &a, &a] {
            let got = m.masked_cached(&mut dst, &mut built).clone();
            assert_eq!(got, m.masked_into(&mut None, false).clone(), "step {step}");
        }
        // New values everywhere, masked entries too: they must not reach the masked network.
        for l in a.net_mut().layers_mut() {
            l.w.mapv_inplace(|w| w * 1.5 + 0.25);
        }
    }
}

/// `GradOut::Write` over an accumulator full of garbage leaves what `GradOut::Add` leaves in a
/// zero one, in both kernels and every order (the permuted first and last layers included).
#[test]
fn written_gradients_equal_gradients_added_to_zero() {
    let tr = SoftAffine { bound: 3.0 };
    let x = uniform(&mut rng(97), 6, 7, 2.0);
    let (g0, dld) = (uniform(&mut rng(98), 6, 7, 1.0), Array1::from_elem(6, -0.4));
    for (i, order) in orders().iter().enumerate() {
        let m = made(order, &HIDDEN, 2, Activation::Relu, 99 + i as u64);
        for norm in [Norm::Apply, Norm::Solve] {
            let mut grads = Vec::new();
            for out in [GradOut::Add, GradOut::Write] {
                let mut f = Flow::new(tr, m.clone(), &COLS, norm);
                f.out = out;
                let mut grad = Made::zeros(&[5, 7, 6, 10], Activation::Relu, order, &hd(&m), 2);
                if out == GradOut::Write {
                    grad.visit_mut("", &mut |_, _, d| d.fill(f64::NAN));
                }
                let mut g = g0.clone();
                f.backward(x.view(), g.view_mut(), dld.view(), &mut grad);
                grads.push((g, flatten(&grad)));
            }
            assert!(grads[0].1.iter().any(|&v| v != 0.0));
            assert_eq!(grads[0], grads[1], "order {i}");
        }
    }
}
