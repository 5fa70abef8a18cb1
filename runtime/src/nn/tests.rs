//! MLP tests: forward against a hand computation, backward against finite differences,
//! PyTorch's init, parameter names and shapes, scratch reuse.

use super::*;
use crate::layers::testutil::{assert_close, fd_grad, flatten, randomize, rng, unflatten, uniform};
use ndarray::array;

const ACTS: [Activation; 4] =
    [Activation::Relu, Activation::Tanh, Activation::LeakyRelu(0.2), Activation::Elu(0.7)];

fn output(net: &Mlp<f64>, x: ArrayView2<f64>, s: &mut MlpScratch<f64>) -> Array2<f64> {
    net.forward(x, s);
    s.acts.last().cloned().unwrap_or_default()
}

#[test]
fn forward_matches_a_hand_computation() {
    let dense = |w: Array2<f64>, b: Array1<f64>| Dense { w, b };
    let layers = vec![
        dense(array![[1.0, -1.0], [2.0, 0.5]], array![0.0, -1.0]),
        dense(array![[1.0], [3.0]], array![0.5]),
    ];
    let x = array![[1.0, 1.0], [-1.0, 0.0]];
    let mut s = MlpScratch::default();
    // Hidden pre-activations: [3, -1.5] and [-1, 0].
    let relu = Mlp::from_layers(layers.clone(), Activation::Relu);
    assert_eq!(output(&relu, x.view(), &mut s), array![[3.5], [0.5]]);
    let leaky = Mlp::from_layers(layers, Activation::LeakyRelu(0.1));
    assert_close(
        "leaky",
        output(&leaky, x.view(), &mut s).as_slice().unwrap(),
        &[3.05, 0.4],
        1e-12,
    );
}

/// backward() matches finite differences of `sum(w .* net(x))`, accumulating into both
/// the parameter gradient and `dx`.
fn check_mlp_grads(act: Activation, seed: u64) {
    let mut r = rng(seed);
    let mut net = Mlp::zeros(&[3, 7, 5, 2], act);
    randomize(&mut net, &mut r, 1.0);
    let (x, w) = (uniform(&mut r, 6, 3, 2.0), uniform(&mut r, 6, 2, 1.0));
    let mut s = MlpScratch::default();
    let mut grad = Mlp::zeros(&[3, 7, 5, 2], act);
    let ones = vec![1.0; grad.count()];
    unflatten(&mut grad, &ones);
    let mut dx = Array2::from_elem(x.dim(), 1.0);
    net.forward(x.view(), &mut s);
    net.backward(x.view(), &mut s, w.view(), &mut grad, Some(dx.view_mut()));

    let loss = |net: &Mlp<f64>, x: ArrayView2<f64>, s: &mut MlpScratch<f64>| {
        (output(net, x, s) * &w).sum()
    };
    let p0 = flatten(&net);
    let mut probe = net.clone();
    let fd = fd_grad(&p0, |p| {
        unflatten(&mut probe, p);
        loss(&probe, x.view(), &mut s)
    });
    let analytic: Vec<f64> = flatten(&grad).iter().map(|g| g - 1.0).collect();
    assert_close(&format!("{act:?} param grad"), &analytic, &fd, 1e-6);
    let fd = fd_grad(x.as_slice().unwrap(), |xs| {
        loss(&net, ArrayView2::from_shape(x.dim(), xs).unwrap(), &mut s)
    });
    let analytic: Vec<f64> = dx.iter().map(|g| g - 1.0).collect();
    assert_close(&format!("{act:?} input grad"), &analytic, &fd, 1e-6);
}

#[test]
fn backward_matches_finite_differences() {
    for (i, act) in ACTS.into_iter().enumerate() {
        check_mlp_grads(act, 30 + i as u64);
    }
}

/// One backward pass of `rows` rows into gradients and `dx` that start at one (so the test
/// sees that both accumulate), twice with the same scratch (the second thread's gradient must
/// be zeroed between calls).
fn backward_twice(net: &Mlp<f64>, x: ArrayView2<f64>, dout: ArrayView2<f64>) -> Vec<f64> {
    let mut s = MlpScratch::default();
    let mut grad = net.clone();
    let ones = vec![1.0; grad.count()];
    unflatten(&mut grad, &ones);
    let mut dx = Array2::from_elem(x.dim(), 1.0);
    for _ in 0..2 {
        net.forward(x, &mut s);
        net.backward(x, &mut s, dout, &mut grad, Some(dx.view_mut()));
    }
    let mut all = flatten(&grad);
    all.extend(dx.iter());
    all
}

/// [`backward_twice`] by ndarray's products on the whole batch at once: the reference.
fn reference_backward(net: &Mlp<f64>, x: ArrayView2<f64>, dout: ArrayView2<f64>) -> Vec<f64> {
    let mut s = MlpScratch::default();
    net.forward(x, &mut s);
    let (mut grad, mut delta) = (net.clone(), dout.to_owned());
    let twice = |g: Array2<f64>| g.mapv(|g| 1.0 + 2.0 * g);
    for i in (0..net.layers.len()).rev() {
        let input = if i == 0 { x.to_owned() } else { s.acts[i - 1].clone() };
        grad.layers_mut()[i].w = twice(input.t().dot(&delta));
        grad.layers_mut()[i].b = delta.sum_axis(Axis(0)).mapv(|g| 1.0 + 2.0 * g);
        let mut below = delta.dot(&net.layers[i].w.t());
        if i > 0 {
            net.act.mul_derivative(below.view_mut(), s.acts[i - 1].view());
        }
        delta = below;
    }
    let mut all = flatten(&grad);
    all.extend(twice(delta).iter());
    all
}

/// A large batch runs in row tiles: on two threads, one half each (the halves of 1,324 rows
/// are tiles of 220 and 221 rows; a two-thread pool makes the split happen on any machine),
/// or on one thread under `par::serial` (six tiles of 220 and 221). Both must give the one-block products'
/// gradients.
#[test]
fn tiled_backward_matches_one_block_products() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
    for (i, act) in ACTS.into_iter().enumerate() {
        let mut r = rng(50 + i as u64);
        let mut net = Mlp::zeros(&[3, 40, 33, 2], act);
        randomize(&mut net, &mut r, 1.0);
        let n = gemm::PAR_MIN_ROWS + 300;
        let (x, dout) = (uniform(&mut r, n, 3, 2.0), uniform(&mut r, n, 2, 1.0));
        let want = reference_backward(&net, x.view(), dout.view());
        let split = pool.install(|| {
            assert_eq!(gemm::row_parts(n), 2, "the batch is split");
            backward_twice(&net, x.view(), dout.view())
        });
        assert_close(&format!("{act:?} two threads"), &split, &want, 1e-12);
        let one = crate::par::serial(|| backward_twice(&net, x.view(), dout.view()));
        assert_close(&format!("{act:?} one thread"), &one, &want, 1e-12);
    }
}

#[test]
fn init_follows_pytorch_and_zero_last() {
    let net = Mlp::<f64>::new(&[4, 16, 3], Activation::Tanh, &mut rng(1), true);
    assert!(net.layers[0].w.iter().chain(&net.layers[0].b).all(|v| v.abs() <= 0.5));
    assert!(net.layers[0].w.iter().any(|v| v.abs() > 0.3));
    assert!(net.layers[1].w.iter().chain(&net.layers[1].b).all(|&v| v == 0.0));
    let full = Mlp::<f32>::new(&[4, 16, 3], Activation::Tanh, &mut rng(1), false);
    assert!(full.layers[1].w.iter().all(|v| v.abs() <= 0.25) && full.layers[1].w.sum() != 0.0);
    assert_eq!(full.layers[1].w.dim(), (16, 3));
}

#[test]
fn params_are_named_and_shaped_like_the_spec() {
    let mut net = Mlp::<f64>::zeros(&[2, 5, 4], Activation::Relu);
    let mut seen = Vec::new();
    net.visit("c0.net", &mut |n, s, d| seen.push((n, s.to_vec(), d.len())));
    let want = [
        ("c0.net.0.weight", vec![2, 5]),
        ("c0.net.0.bias", vec![5]),
        ("c0.net.1.weight", vec![5, 4]),
        ("c0.net.1.bias", vec![4]),
    ];
    let want: Vec<_> =
        want.into_iter().map(|(n, s)| (n.to_string(), s.clone(), s.iter().product())).collect();
    assert_eq!(seen, want);
    // A strided weight (public field) is visited in logical order.
    net.layers_mut()[0].w =
        Array2::from_shape_fn((5, 2), |(i, j)| (10 * i + j) as f64).reversed_axes();
    let mut first = Vec::new();
    net.visit_mut("", &mut |_, _, d| first.extend(d.iter().take(3).copied()));
    assert_eq!(&first[..3], &[0.0, 10.0, 20.0]);
}

#[test]
fn scratch_follows_the_batch_size() {
    let net = Mlp::<f64>::new(&[2, 3, 1], Activation::Elu(1.0), &mut rng(2), false);
    let mut s = MlpScratch::default();
    for n in [4, 1, 4] {
        let x = uniform(&mut rng(n as u64), n, 2, 1.0);
        let mut fresh = MlpScratch::default();
        assert_eq!(output(&net, x.view(), &mut s), output(&net, x.view(), &mut fresh));
    }
}

#[test]
fn layerless_mlp_is_the_identity() {
    let net = Mlp::<f64>::zeros(&[3], Activation::Relu);
    let x = uniform(&mut rng(5), 2, 3, 1.0);
    let mut s = MlpScratch::default();
    assert_eq!(output(&net, x.view(), &mut s), x);
    let mut dx = Array2::zeros((2, 3));
    net.backward(x.view(), &mut s, x.view(), &mut net.clone(), Some(dx.view_mut()));
    assert_eq!(dx, x);
}

/// A network's id changes with every mutable borrow of its weights and only then: a clone
/// keeps it (same weights), separately built networks never share one, and equality looks
/// at the weights alone.
#[test]
fn ids_follow_the_weights() {
    let mut a = Mlp::<f64>::zeros(&[2, 3, 1], Activation::Relu);
    let b = Mlp::<f64>::zeros(&[2, 3, 1], Activation::Relu);
    assert_ne!(a.id(), b.id());
    assert_eq!(a, b);
    let c = a.clone();
    assert_eq!(c.id(), a.id());
    let id = a.id();
    a.layers_mut();
    assert_ne!(a.id(), id);
    let id = a.id();
    a.visit_mut("", &mut |_, _, _| {});
    assert_ne!(a.id(), id);
    let _ = (a.layers(), a.id());
    assert_eq!(a.id(), a.clone().id());
}
