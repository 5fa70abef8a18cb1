//! Backward passes reuse the activations their own forward pass recorded (the per-layer
//! tapes), never the scratch other calls share: a gradient is the same whatever ran on the
//! thread before it. The reference is computed on a fresh thread (fresh thread-local scratch);
//! the same call on a thread that has just run other batch sizes, `log_prob`, `forward`, the
//! generative backward pass and `log_prob_grad_x` must give identical bits.

use flowspec::interp::Interp;
use flowspec_runtime::Flow;
use flowspec_tests::specs::*;
use ndarray::Array2;
use rand::RngExt;

fn points(n: usize, d: usize, seed: u64) -> Array2<f64> {
    let mut rng = flowspec_runtime::rng_from_seed(seed);
    Array2::from_shape_fn((n, d), |_| 2.0 * rng.random::<f64>() - 1.0)
}

/// Every call that touches a flow's scratch or tapes, on batches of other sizes.
fn disturb<F: Flow<Real = f64>>(flow: &F, d: usize) {
    let (a, b) = (points(5, d, 11), points(9, d, 12));
    flow.nll_and_grad(a.view());
    flow.log_prob(b.view());
    flow.forward(a.view());
    flow.log_prob_grad_x(b.view());
    let (z, _) = flow.inverse(a.view());
    flow.forward_vjp(z.view(), b.slice(ndarray::s![..5, ..]), a.column(0));
    flow.nll_and_grad(b.view());
}

fn check<F: Flow<Real = f64> + Sync>(mut flow: F) {
    let d = flow.dim();
    // Random parameters everywhere (a new flow's last layers are zero, which hides a lot).
    flowspec_runtime::verify::perturb(&mut flow, 0.3, 3);
    let x = points(16, d, 10);
    let fresh = || std::thread::scope(|s| s.spawn(|| flow.nll_and_grad(x.view())).join());
    let (want_loss, want_grad) = fresh().expect("reference thread");
    let fresh_vjp = || {
        let (z, _) = flow.inverse(x.view());
        let gx = points(16, d, 13);
        std::thread::scope(|s| {
            s.spawn(|| flow.forward_vjp(z.view(), gx.view(), x.column(0))).join()
        })
    };
    let want_vjp = fresh_vjp().expect("reference thread");
    for _ in 0..2 {
        disturb(&flow, d);
        let (loss, grad) = flow.nll_and_grad(x.view());
        assert_eq!((loss, &grad), (want_loss, &want_grad), "{}: nll_and_grad", flow.name());
        disturb(&flow, d);
        let (z, _) = flow.inverse(x.view());
        let vjp = flow.forward_vjp(z.view(), points(16, d, 13).view(), x.column(0));
        assert_eq!(vjp, want_vjp, "{}: forward_vjp", flow.name());
    }
}

/// The interpreter of the flow named `name` in `spec`.
fn interp(spec: &str, name: &str) -> Interp<f64> {
    let src = std::fs::read_to_string(format!("{}/../{spec}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let program = flowspec::compile(&src).expect("spec compiles");
    Interp::new(program.flows.iter().find(|f| f.name == name).expect("flow in spec"), 7)
}

#[test]
fn generated_couplings() {
    check(RealNvpMoons::new(7));
    check(NiceMoons::new(7));
    check(NsfMoons::new(7));
}

#[test]
fn generated_autoregressive() {
    check(MafSmall::new(7));
    check(IafSmall::new(7));
    check(SplineAr::new(7));
}

#[test]
fn interpreter() {
    check(interp("specs/realnvp_moons.flow", "RealNvpMoons"));
    check(interp("specs/nsf_moons.flow", "NsfMoons"));
    check(interp("specs/autoregressive.flow", "MafSmall"));
}
