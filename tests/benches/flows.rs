//! criterion benchmarks of the generated code on the benchmark configurations of issue 5
//! (`docs/performance.md`): C1 = `specs/realnvp_moons.flow`, C3 = `specs/nsf_moons.flow`,
//! C4 = C1's training step at batch 16, 256 and 4096, and C1's per-sample `log_prob_one`;
//! each in f64 (the specs as they are) and f32 (the same specs, `flowspec_tests::f32_variants`).
//!
//! `cargo bench -p flowspec-tests --bench flows` (all), or with a filter, e.g. `-- C1/f32`.
//! A training step is what `flowspec bench` and the PyTorch side time: mean NLL, backward
//! pass, Adam update at lr 1e-3, parameters written back.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowspec_runtime::optim::Adam;
use flowspec_runtime::{data, rng_from_seed, Flow, Real};
use flowspec_tests::f32_variants::{NsfMoons32, RealNvpMoons32};
use flowspec_tests::specs::{NsfMoons, RealNvpMoons};
use ndarray::{Array2, Axis};
use rand::RngExt;
use std::hint::black_box;
use std::time::Duration;

const N_EVAL: usize = 10_000;

/// `n` moons training rows drawn with replacement (seeded), in the flow's type.
fn moons<T: Real>(n: usize, seed: u64) -> Array2<T> {
    let train = data::resolve("moons", 0).expect("built-in moons").train;
    let mut rng = rng_from_seed(seed);
    let rows: Vec<usize> = (0..n).map(|_| rng.random_range(0..train.nrows())).collect();
    train.select(Axis(0), &rows).mapv(T::of)
}

/// One Adam step per iteration, cycling through 64 batches (8 above batch 256).
fn train_step<F: Flow>(c: &mut Criterion, group: &str, mut flow: F, batches: &[usize]) {
    let mut g = c.benchmark_group(group);
    for &batch in batches {
        let n_batches = if batch <= 256 { 64 } else { 8 };
        let rows = moons::<F::Real>(n_batches * batch, 1);
        let data: Vec<Array2<F::Real>> =
            rows.axis_chunks_iter(Axis(0), batch).map(|b| b.to_owned()).collect();
        let mut adam = Adam::new(flow.num_params(), 1e-3);
        let mut params = flow.params();
        let mut at = 0;
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::new("train_step", batch), |b| {
            b.iter(|| {
                let (loss, grad) = flow.nll_and_grad(data[at % data.len()].view());
                at += 1;
                adam.step(&mut params, &grad);
                flow.set_params(&params);
                black_box(loss)
            })
        });
    }
    g.finish();
}

fn throughput<F: Flow>(c: &mut Criterion, group: &str, flow: &F) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(N_EVAL as u64));
    let x = moons::<F::Real>(N_EVAL, 2);
    g.bench_function(BenchmarkId::new("log_prob", N_EVAL), |b| {
        b.iter(|| black_box(flow.log_prob(x.view())))
    });
    let mut rng = rng_from_seed(3);
    g.bench_function(BenchmarkId::new("sample", N_EVAL), |b| {
        b.iter(|| black_box(flow.sample(N_EVAL, &mut rng)))
    });
    g.finish();
}

fn c1(c: &mut Criterion) {
    train_step(c, "C1/f64", RealNvpMoons::new(0), &[256]);
    throughput(c, "C1/f64", &RealNvpMoons::new(0));
    train_step(c, "C1/f32", RealNvpMoons32::new(0), &[256]);
    throughput(c, "C1/f32", &RealNvpMoons32::new(0));
}

fn c3(c: &mut Criterion) {
    train_step(c, "C3/f64", NsfMoons::new(0), &[256]);
    throughput(c, "C3/f64", &NsfMoons::new(0));
    train_step(c, "C3/f32", NsfMoons32::new(0), &[256]);
    throughput(c, "C3/f32", &NsfMoons32::new(0));
}

fn c4(c: &mut Criterion) {
    train_step(c, "C4/f64", RealNvpMoons::new(0), &[16, 256, 4096]);
    train_step(c, "C4/f32", RealNvpMoons32::new(0), &[16, 256, 4096]);
}

/// The per-sample API on C1 (target: under 2 microseconds per point).
fn log_prob_one(c: &mut Criterion) {
    let mut g = c.benchmark_group("C1/log_prob_one");
    g.throughput(Throughput::Elements(1));
    let x64 = moons::<f64>(1024, 4);
    let m64 = RealNvpMoons::new(0);
    let mut at = 0;
    g.bench_function("f64", |b| {
        b.iter(|| {
            at = (at + 1) % 1024;
            black_box(m64.log_prob_one(&[x64[[at, 0]], x64[[at, 1]]]))
        })
    });
    let x32 = moons::<f32>(1024, 4);
    let m32 = RealNvpMoons32::new(0);
    g.bench_function("f32", |b| {
        b.iter(|| {
            at = (at + 1) % 1024;
            black_box(m32.log_prob_one(&[x32[[at, 0]], x32[[at, 1]]]))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = c1, c3, c4, log_prob_one
}
criterion_main!(benches);
