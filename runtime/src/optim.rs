//! The Adam optimizer, with PyTorch's semantics (bias-corrected moments, `eps` added to the
//! square root of the corrected second moment), so learning rates carry over from PyTorch.

use crate::flow::Flow;
use crate::real::Real;

/// Adam over a flat parameter vector. The moments are kept in f64 even for f32 flows, so their
/// small running averages do not lose precision.
#[derive(Clone, Debug)]
pub struct Adam {
    /// The learning rate; training may change it between steps (cosine decay).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// First moment (running mean of the gradient).
    pub m: Vec<f64>,
    /// Second moment (running mean of the squared gradient).
    pub v: Vec<f64>,
    /// The number of steps taken.
    pub t: u64,
}

/// The update of [`Adam::step`], inlined into the CPU-specific copies `simd` makes.
#[inline(always)]
fn adam_body<'a, T: Real>(
    params: &mut [T],
    grad: &[T],
    moments: impl Iterator<Item = (&'a mut f64, &'a mut f64)>,
    [b1, b2, bias2_sqrt, eps, step_size]: [f64; 5],
) {
    for ((p, g), (m, v)) in params.iter_mut().zip(grad).zip(moments) {
        let g = g.f64();
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        // The same order of operations as torch.optim.Adam (non-fused, non-amsgrad).
        let denom = v.sqrt() / bias2_sqrt + eps;
        *p = T::of(p.f64() - step_size * *m / denom);
    }
}

/// Parameters from which an update (of a flat vector, or of one tensor in
/// [`Adam::step_flow`]) is split across two threads: C2's MADEs have 576,640 in tensors of
/// 16,384 to 65,536, and an update reads and writes four arrays of that length.
const PAR_MIN_PARAMS: usize = 1 << 14;

/// [`adam_body`] compiled for the CPU's widest vector instructions (runtime dispatch), so the
/// square roots and divisions run several to an instruction in a default build.
fn adam_simd<T: Real>(p: &mut [T], g: &[T], m: &mut [f64], v: &mut [f64], k: [f64; 5]) {
    crate::nn::simd(
        #[inline(always)]
        || adam_body(p, g, m.iter_mut().zip(v.iter_mut()), k),
    );
}

/// The update of one run of parameters, in two halves on two threads when it is long.
fn update<T: Real>(params: &mut [T], grad: &[T], m: &mut [f64], v: &mut [f64], k: [f64; 5]) {
    if params.len() >= PAR_MIN_PARAMS && crate::par::may_fork() {
        // Elementwise: two halves on two threads give the same result.
        let mid = params.len() / 2;
        let ((p0, p1), (g0, g1)) = (params.split_at_mut(mid), grad.split_at(mid));
        let ((m0, m1), (v0, v1)) = (m.split_at_mut(mid), v.split_at_mut(mid));
        rayon::join(|| adam_simd(p0, g0, m0, v0, k), || adam_simd(p1, g1, m1, v1, k));
    } else {
        adam_simd(params, grad, m, v, k);
    }
}

impl Adam {
    /// Adam for `n_params` parameters with PyTorch's defaults (0.9, 0.999, 1e-8).
    pub fn new(n_params: usize, lr: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            m: vec![0.0; n_params],
            v: vec![0.0; n_params],
            t: 0,
        }
    }

    /// One update of `params` against the gradient `grad` of the loss.
    ///
    /// Panics if the lengths differ from `n_params` (a programming error, not user input).
    pub fn step<T: Real>(&mut self, params: &mut [T], grad: &[T]) {
        assert_eq!(params.len(), self.m.len(), "Adam::step: wrong number of parameters");
        let k = self.advance(grad.len());
        update(params, grad, &mut self.m, &mut self.v, k);
    }

    /// [`Adam::step`] on a flow's parameters where they are, tensor by tensor in the canonical
    /// order (`grad` is flat in that order, as [`Flow::nll_and_grad`] returns it): the same
    /// update without copying the parameters out and back ([`Flow::set_params`]).
    ///
    /// Panics if the lengths differ from `n_params` (a programming error, not user input).
    pub fn step_flow<F: Flow + ?Sized>(&mut self, flow: &mut F, grad: &[F::Real]) {
        assert_eq!(flow.num_params(), self.m.len(), "Adam::step_flow: wrong number of parameters");
        let k = self.advance(grad.len());
        let mut at = 0;
        flow.visit_params_mut(&mut |_, _, p| {
            let r = at..at + p.len();
            update(p, &grad[r.clone()], &mut self.m[r.clone()], &mut self.v[r], k);
            at += p.len();
        });
    }

    /// Counts a step and returns its constants for [`adam_body`].
    fn advance(&mut self, grad_len: usize) -> [f64; 5] {
        assert_eq!(grad_len, self.m.len(), "Adam::step: wrong gradient length");
        self.t += 1;
        // Exponent as i32 would overflow after 2^31 steps; powf has no such limit.
        let t = self.t as f64;
        let bias1 = 1.0 - self.beta1.powf(t);
        let bias2_sqrt = (1.0 - self.beta2.powf(t)).sqrt();
        let step_size = self.lr / bias1;
        [self.beta1, self.beta2, bias2_sqrt, self.eps, step_size]
    }

    /// Forgets the moments and the step count.
    pub fn reset(&mut self) {
        self.m.iter_mut().for_each(|x| *x = 0.0);
        self.v.iter_mut().for_each(|x| *x = 0.0);
        self.t = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_matches_hand_computation() {
        // Step 1: m = 0.1 g, v = 0.001 g^2, m_hat = g, v_hat = g^2, so each parameter moves
        // by lr * g / (|g| + eps): almost exactly lr against the gradient's sign.
        let mut adam = Adam::new(3, 0.1);
        let mut p = [1.0f64, -2.0, 0.5];
        let g = [0.5f64, -4.0, 0.0];
        adam.step(&mut p, &g);
        let expect = |p0: f64, g: f64| p0 - 0.1 * g / (g.abs() + 1e-8);
        for i in 0..3 {
            assert!((p[i] - expect([1.0, -2.0, 0.5][i], g[i])).abs() < 1e-14, "{i}: {}", p[i]);
        }
        assert_eq!(adam.t, 1);
        assert!((adam.m[1] - -0.4).abs() < 1e-15);
        assert!((adam.v[1] - 0.016).abs() < 1e-15);
    }

    #[test]
    fn second_step_matches_hand_computation() {
        let mut adam = Adam::new(1, 0.01);
        let mut p = [0.0f64];
        adam.step(&mut p, &[1.0]);
        adam.step(&mut p, &[3.0]);
        // m = 0.9*0.1 + 0.1*3 = 0.39; v = 0.999*0.001 + 0.001*9 = 0.009999
        let m_hat = 0.39 / (1.0 - 0.81);
        let v_hat: f64 = 0.009999 / (1.0 - 0.998001);
        let first = -0.01 / (1.0 + 1e-8);
        let expected = first - 0.01 * m_hat / (v_hat.sqrt() + 1e-8);
        assert!((p[0] - expected).abs() < 1e-12, "{} vs {expected}", p[0]);
    }

    #[test]
    fn minimises_a_quadratic_in_f32_and_f64() {
        // f(p) = sum_i c_i (p_i - a_i)^2 with very different curvatures.
        let a = [3.0, -1.0, 0.25];
        let c = [1.0, 10.0, 0.1];
        let mut p64 = [0.0f64; 3];
        let mut p32 = [0.0f32; 3];
        let (mut o64, mut o32) = (Adam::new(3, 0.05), Adam::new(3, 0.05));
        for _ in 0..3000 {
            let g64: Vec<f64> = (0..3).map(|i| 2.0 * c[i] * (p64[i] - a[i])).collect();
            let g32: Vec<f32> =
                (0..3).map(|i| (2.0 * c[i] * (p32[i] as f64 - a[i])) as f32).collect();
            o64.step(&mut p64, &g64);
            o32.step(&mut p32, &g32);
        }
        for i in 0..3 {
            assert!((p64[i] - a[i]).abs() < 1e-3, "f64 p[{i}] = {}", p64[i]);
            assert!((p32[i] as f64 - a[i]).abs() < 1e-3, "f32 p[{i}] = {}", p32[i]);
        }
    }

    #[test]
    fn large_updates_split_across_threads_equal_the_serial_update() {
        let n = PAR_MIN_PARAMS + 3;
        let p0: Vec<f32> = (0..n).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let g: Vec<f32> = (0..n).map(|i| ((i * 5) % 11) as f32 * 0.1 - 0.5).collect();
        let run = |serial: bool| {
            let (mut p, mut adam) = (p0.clone(), Adam::new(n, 0.01));
            for _ in 0..3 {
                if serial {
                    crate::par::serial(|| adam.step(&mut p, &g));
                } else {
                    adam.step(&mut p, &g);
                }
            }
            (p, adam.m, adam.v)
        };
        let split = run(false);
        assert_ne!(split.0, p0);
        assert_eq!(split, run(true));
    }

    /// In place on a flow's tensors, the same update as on its flat parameter vector.
    #[test]
    fn step_flow_equals_the_flat_step() {
        // Two tensors, each long enough to be split over two threads.
        let mut flow = crate::train::tests::DiagGauss::<f64>::new(PAR_MIN_PARAMS + 5);
        flow.mu.iter_mut().enumerate().for_each(|(i, m)| *m = ((i * 7) % 13) as f64 - 6.0);
        let (mut flat, p0) = (flow.params(), flow.params());
        let g: Vec<f64> = (0..flat.len()).map(|i| ((i * 5) % 11) as f64 * 0.1 - 0.5).collect();
        let (mut a, mut b) = (Adam::new(flat.len(), 0.01), Adam::new(flat.len(), 0.01));
        for _ in 0..3 {
            a.step(&mut flat, &g);
            b.step_flow(&mut flow, &g);
        }
        assert_ne!(flat, p0);
        assert_eq!(flow.params(), flat);
        assert_eq!((a.m, a.v, a.t), (b.m, b.v, b.t));
    }

    #[test]
    fn reset_forgets_state() {
        let mut adam = Adam::new(2, 0.1);
        adam.step(&mut [1.0f64, 2.0], &[1.0, 1.0]);
        adam.reset();
        assert_eq!((adam.t, adam.m.clone(), adam.v.clone()), (0, vec![0.0; 2], vec![0.0; 2]));
    }
}
