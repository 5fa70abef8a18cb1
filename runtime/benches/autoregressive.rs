//! One MAF layer of zuko's default size (D = 64, hidden [256, 256], relu, soft-clamped affine)
//! on a batch of 10,000: the parallel `ar_apply` against the sequential `ar_solve`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowspec_runtime::layers::{ar_apply, ar_solve, made_degrees, ArScratch, Made};
use flowspec_runtime::nn::Activation;
use flowspec_runtime::transform::SoftAffine;
use flowspec_runtime::Real;
use ndarray::{Array1, Array2};
use rand::RngExt;

const D: usize = 64;
const HIDDEN: [usize; 2] = [256, 256];
const BATCH: usize = 10_000;

fn bench_dtype<T: Real>(c: &mut Criterion) {
    let mut rng = flowspec_runtime::rng_from_seed(7);
    let order: Vec<usize> = (1..=D).rev().collect();
    let hd = made_degrees(D, &order, &HIDDEN);
    let hd: Vec<&[usize]> = hd.iter().map(|h| &h[..]).collect();
    let sizes = [D, HIDDEN[0], HIDDEN[1], 2 * D];
    let made = Made::<T>::new(&sizes, Activation::Relu, &order, &hd, 2, &mut rng, false);
    let tr = SoftAffine { bound: 3.0 };
    let cols: Vec<usize> = (0..D).collect();
    let x0 = Array2::from_shape_simple_fn((BATCH, D), || T::of(rng.random_range(-2.0..2.0)));
    let mut s = ArScratch::default();
    let (mut x, mut ld) = (x0.clone(), Array1::zeros(BATCH));

    let mut g = c.benchmark_group(format!("maf_{}", T::DTYPE));
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    g.bench_function("ar_apply", |b| {
        b.iter(|| {
            x.assign(&x0);
            ar_apply(&tr, &made, &cols, x.view_mut(), ld.view_mut(), &mut s);
        })
    });
    g.bench_function("ar_solve", |b| {
        b.iter(|| {
            x.assign(&x0);
            ar_solve(&tr, &made, &cols, x.view_mut(), ld.view_mut(), &mut s);
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_dtype::<f32>(c);
    bench_dtype::<f64>(c);
}

criterion_group!(autoregressive, benches);
criterion_main!(autoregressive);
