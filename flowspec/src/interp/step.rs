//! One interpreted layer: its kernels in both directions and the backward passes of both.

use super::library::with_tr;
use super::Step;
use crate::ir::ArKind;
use flowspec_runtime::layers::{self, ArScratch, CouplingScratch, Tape};
use flowspec_runtime::params::Params;
use flowspec_runtime::transform as tf;
use flowspec_runtime::Real;
use ndarray::{Array1, Array2, ArrayViewMut1, ArrayViewMut2};

/// The buffers the steps share (one interpreted flow runs its layers one after another).
#[derive(Default)]
pub struct Scratch<T> {
    pub coupling: CouplingScratch<T>,
    pub ar: ArScratch<T>,
}

/// What one step's forward pass leaves for its backward pass (see [`Tape`]): the backward
/// replays the tape of the kernel the step ran, so it reads only its own pass's activations.
#[derive(Default)]
pub struct StepTape<T> {
    coupling: Tape<CouplingScratch<T>>,
    ar: Tape<ArScratch<T>>,
}

/// Which way a step runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Normalizing: x to z.
    Inverse,
    /// Generative: z to x.
    Forward,
}

impl<T: Real> Step<T> {
    /// Applies the step in direction `dir`, in place, adding its log-determinant.
    pub fn run(&self, dir: Dir, x: ArrayViewMut2<T>, ld: ArrayViewMut1<T>, s: &mut Scratch<T>) {
        self.run_in(dir, x, ld, &mut s.coupling, &mut s.ar);
    }

    /// [`Step::run`] as the forward step of a backward pass: its buffers go on `tape`.
    pub fn record(&self, dir: Dir, h: &mut Array2<T>, ld: &mut Array1<T>, t: &mut StepTape<T>) {
        let n = h.nrows();
        self.run_in(dir, h.view_mut(), ld.view_mut(), t.coupling.record(n), t.ar.record(n));
    }

    fn run_in(
        &self,
        dir: Dir,
        x: ArrayViewMut2<T>,
        ld: ArrayViewMut1<T>,
        sc: &mut CouplingScratch<T>,
        sa: &mut ArScratch<T>,
    ) {
        let inv = dir == Dir::Inverse;
        match self {
            Step::Affine { net, cond, trans, bound } if inv => {
                layers::affine_coupling_inverse(net, cond, trans, *bound, x, ld, sc)
            }
            Step::Affine { net, cond, trans, bound } => {
                layers::affine_coupling_forward(net, cond, trans, *bound, x, ld, sc)
            }
            Step::Additive { net, cond, trans } if inv => {
                layers::additive_coupling_inverse(net, cond, trans, x, ld, sc)
            }
            Step::Additive { net, cond, trans } => {
                layers::additive_coupling_forward(net, cond, trans, x, ld, sc)
            }
            Step::ActNorm { p, cols } if inv => layers::actnorm_inverse(p, cols, x, ld),
            Step::ActNorm { p, cols } => layers::actnorm_forward(p, cols, x, ld),
            Step::Elementwise { tr, p, cols } if inv => {
                with_tr!(tr, |t| tf::elementwise_inverse(&t, p, cols, x, ld))
            }
            Step::Elementwise { tr, p, cols } => {
                with_tr!(tr, |t| tf::elementwise_forward(&t, p, cols, x, ld))
            }
            Step::TrCoupling { tr, net, cond, trans } if inv => {
                with_tr!(tr, |t| tf::transformer_coupling_inverse(&t, net, cond, trans, x, ld, sc))
            }
            Step::TrCoupling { tr, net, cond, trans } => {
                with_tr!(tr, |t| tf::transformer_coupling_forward(&t, net, cond, trans, x, ld, sc))
            }
            Step::Linear { p, cols } if inv => p.inverse(cols, x, ld),
            Step::Linear { p, cols } => p.forward(cols, x, ld),
            Step::Ar { ar, tr, made, cols } => {
                if parallel(*ar, dir) {
                    with_tr!(tr, |t| layers::ar_apply(&t, made, cols, x, ld, sa))
                } else {
                    with_tr!(tr, |t| layers::ar_solve(&t, made, cols, x, ld, sa))
                }
            }
        }
    }

    /// The backward pass of `record(dir, ..)`: `x_in` is that call's input and `t` its tape,
    /// `g` holds dL/d output and becomes dL/d input; gradients accumulate into `grad`, a step
    /// of the same shape.
    pub fn backward(
        &self,
        dir: Dir,
        x_in: &Array2<T>,
        g: &mut Array2<T>,
        dld: &Array1<T>,
        grad: &mut Step<T>,
        t: &mut StepTape<T>,
    ) {
        if let (Step::Ar { ar, tr, made, cols }, Step::Ar { made: gm, .. }) = (self, &mut *grad) {
            let (x, gv, dv, sa) = (x_in.view(), g.view_mut(), dld.view(), &mut t.ar);
            // The interpreter zeroes its whole gradient before a pass; every step adds.
            const ADD: layers::GradOut = layers::GradOut::Add;
            return if parallel(*ar, dir) {
                with_tr!(tr, |t| layers::ar_apply_backward(&t, made, cols, x, gv, dv, gm, sa, ADD))
            } else {
                with_tr!(tr, |t| layers::ar_solve_backward(&t, made, cols, x, gv, dv, gm, sa, ADD))
            };
        }
        match dir {
            Dir::Inverse => self.backward_inverse(x_in, g, dld, grad, &mut t.coupling),
            Dir::Forward => self.backward_forward(x_in, g, dld, grad, &mut t.coupling),
        }
    }

    fn backward_inverse(
        &self,
        x_in: &Array2<T>,
        g: &mut Array2<T>,
        dld: &Array1<T>,
        grad: &mut Step<T>,
        s: &mut Tape<CouplingScratch<T>>,
    ) {
        let (x, gv, dv) = (x_in.view(), g.view_mut(), dld.view());
        match (self, grad) {
            (Step::Affine { net, cond, trans, bound }, Step::Affine { net: gn, .. }) => {
                layers::affine_coupling_backward(net, cond, trans, *bound, x, gv, dv, gn, s)
            }
            (Step::Additive { net, cond, trans }, Step::Additive { net: gn, .. }) => {
                layers::additive_coupling_backward(net, cond, trans, x, gv, dv, gn, s)
            }
            (Step::ActNorm { p, cols }, Step::ActNorm { p: gp, .. }) => {
                layers::actnorm_backward(p, cols, x, gv, dv, gp)
            }
            (Step::Elementwise { tr, p, cols }, Step::Elementwise { p: gp, .. }) => {
                with_tr!(tr, |t| tf::elementwise_backward(&t, p, cols, x, gv, dv, gp))
            }
            (Step::TrCoupling { tr, net, cond, trans }, Step::TrCoupling { net: gn, .. }) => {
                with_tr!(tr, |t| tf::transformer_coupling_backward(
                    &t, net, cond, trans, x, gv, dv, gn, s
                ))
            }
            (Step::Linear { p, cols }, Step::Linear { p: gp, .. }) => {
                p.backward(cols, x, gv, dv, gp)
            }
            _ => unreachable!("gradient steps are clones of the parameter steps"),
        }
    }

    fn backward_forward(
        &self,
        z_in: &Array2<T>,
        g: &mut Array2<T>,
        dld: &Array1<T>,
        grad: &mut Step<T>,
        s: &mut Tape<CouplingScratch<T>>,
    ) {
        let (z, gv, dv) = (z_in.view(), g.view_mut(), dld.view());
        match (self, grad) {
            (Step::Affine { net, cond, trans, bound }, Step::Affine { net: gn, .. }) => {
                layers::affine_coupling_forward_backward(net, cond, trans, *bound, z, gv, dv, gn, s)
            }
            (Step::Additive { net, cond, trans }, Step::Additive { net: gn, .. }) => {
                layers::additive_coupling_forward_backward(net, cond, trans, z, gv, dv, gn, s)
            }
            (Step::ActNorm { p, cols }, Step::ActNorm { p: gp, .. }) => {
                layers::actnorm_forward_backward(p, cols, z, gv, dv, gp)
            }
            (Step::Elementwise { tr, p, cols }, Step::Elementwise { p: gp, .. }) => {
                with_tr!(tr, |t| tf::elementwise_forward_backward(&t, p, cols, z, gv, dv, gp))
            }
            (Step::TrCoupling { tr, net, cond, trans }, Step::TrCoupling { net: gn, .. }) => {
                with_tr!(tr, |t| tf::transformer_coupling_forward_backward(
                    &t, net, cond, trans, z, gv, dv, gn, s
                ))
            }
            (Step::Linear { p, cols }, Step::Linear { p: gp, .. }) => {
                p.forward_backward(cols, z, gv, dv, gp)
            }
            _ => unreachable!("gradient steps are clones of the parameter steps"),
        }
    }

    pub fn params(&self) -> &dyn Params<T> {
        match self {
            Step::Affine { net, .. }
            | Step::Additive { net, .. }
            | Step::TrCoupling { net, .. } => net,
            Step::ActNorm { p, .. } => p,
            Step::Elementwise { p, .. } => p,
            Step::Linear { p, .. } => p.params(),
            Step::Ar { made, .. } => made,
        }
    }

    pub fn params_mut(&mut self) -> &mut dyn Params<T> {
        match self {
            Step::Affine { net, .. }
            | Step::Additive { net, .. }
            | Step::TrCoupling { net, .. } => net,
            Step::ActNorm { p, .. } => p,
            Step::Elementwise { p, .. } => p,
            Step::Linear { p, .. } => p.params_mut(),
            Step::Ar { made, .. } => made,
        }
    }

    /// The prefix of the step's tensors: conditioned layers nest their network under `.net`.
    pub fn tensor_prefix(&self, prefix: &str) -> String {
        match self {
            Step::Affine { .. }
            | Step::Additive { .. }
            | Step::TrCoupling { .. }
            | Step::Ar { .. } => format!("{prefix}.net"),
            _ => prefix.to_string(),
        }
    }
}

/// Whether direction `dir` of an autoregressive layer is its one-pass direction.
fn parallel(ar: ArKind, dir: Dir) -> bool {
    matches!((ar, dir), (ArKind::Maf, Dir::Inverse) | (ArKind::Iaf, Dir::Forward))
}
