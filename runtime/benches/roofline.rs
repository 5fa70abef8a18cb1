//! The machine's measured ceilings against what flowspec's matrix products reach at the sizes
//! of issue 5's largest products (C4: the RealNVP step at batch 4096, MLP 1 -> 64 -> 64 -> 2).
//!
//! `cargo bench -p flowspec-runtime --bench roofline` prints, in GFLOP/s (2mnk / time, median
//! of 7 timed trials of about 0.2 s after a warm-up):
//! - the FMA ceiling: a loop of independent 512-bit (or 256-bit) FMAs on one and two cores,
//!   the same method as `shared/design/DEPENDENCIES.md` section 3;
//! - `flowspec_runtime::gemm::gemm` at each product shape of a C4 batch-4096 training step
//!   (forward, gradient passed down, weight gradient) and at 4096x256x256 for comparison.

use flowspec_runtime::gemm::gemm;
use flowspec_runtime::Real;
use ndarray::Array2;
use rand::RngExt;
use std::time::Instant;

/// Median GFLOP/s of `f`, which does `flops` floating-point operations per call.
fn rate(flops: f64, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    let mut calls = 0u64;
    while t.elapsed().as_secs_f64() < 0.2 {
        f();
        calls += 1;
    }
    let mut trials: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f();
            }
            flops * calls as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    trials.sort_by(f64::total_cmp);
    trials[3]
}

/// `iters` rounds of 12 independent FMA chains, each a named local so that all 12 live in
/// registers: `$fma(acc, a, b)` over vectors made by `$set1(f64)`; returns their lane sum.
macro_rules! fma_kernel {
    ($name:ident, $feat:literal, $vec:ty, $set1:ident, $fma:ident, $lane:ty, $lanes:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        unsafe fn $name(iters: usize) -> f64 {
            use std::arch::x86_64::*;
            // Distinct starting values, hidden from the optimizer, keep the chains separate.
            let v = |i: usize| $set1(std::hint::black_box(1.0 + i as f64 * 0.01) as $lane);
            let (a, b) = ($set1(0.999 as $lane), $set1(1e-3 as $lane));
            let (mut c0, mut c1, mut c2, mut c3, mut c4, mut c5) =
                (v(0), v(1), v(2), v(3), v(4), v(5));
            let (mut c6, mut c7, mut c8, mut c9, mut c10, mut c11) =
                (v(6), v(7), v(8), v(9), v(10), v(11));
            for _ in 0..iters {
                c0 = $fma(c0, a, b);
                c1 = $fma(c1, a, b);
                c2 = $fma(c2, a, b);
                c3 = $fma(c3, a, b);
                c4 = $fma(c4, a, b);
                c5 = $fma(c5, a, b);
                c6 = $fma(c6, a, b);
                c7 = $fma(c7, a, b);
                c8 = $fma(c8, a, b);
                c9 = $fma(c9, a, b);
                c10 = $fma(c10, a, b);
                c11 = $fma(c11, a, b);
            }
            [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11]
                .iter()
                .map(|c| {
                    std::mem::transmute::<$vec, [$lane; $lanes]>(*c)
                        .iter()
                        .map(|&x| x as f64)
                        .sum::<f64>()
                })
                .sum()
        }
    };
}
fma_kernel!(fma_512_f32, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, f32, 16);
fma_kernel!(fma_512_f64, "avx512f", __m512d, _mm512_set1_pd, _mm512_fmadd_pd, f64, 8);
fma_kernel!(fma_256_f32, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, f32, 8);
fma_kernel!(fma_256_f64, "avx2,fma", __m256d, _mm256_set1_pd, _mm256_fmadd_pd, f64, 4);

/// The FMA ceiling of `threads` cores for `T`, at the widest vector width this CPU has
/// (None off x86-64 or without FMA).
fn fma_ceiling<T: Real>(threads: usize) -> Option<(f64, &'static str)> {
    const ITERS: usize = 1 << 16;
    let f32 = std::mem::size_of::<T>() == 4;
    #[cfg(target_arch = "x86_64")]
    let (run, bits): (fn(usize) -> f64, usize) = if is_x86_feature_detected!("avx512f") {
        (if f32 { |n| unsafe { fma_512_f32(n) } } else { |n| unsafe { fma_512_f64(n) } }, 512)
    } else if is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx2") {
        (if f32 { |n| unsafe { fma_256_f32(n) } } else { |n| unsafe { fma_256_f64(n) } }, 256)
    } else {
        return None;
    };
    #[cfg(not(target_arch = "x86_64"))]
    return None;
    let lanes = bits / 8 / std::mem::size_of::<T>();
    let flops = (2 * 12 * lanes * ITERS * threads) as f64;
    let r = rate(flops, || {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| std::hint::black_box(run(std::hint::black_box(ITERS))));
            }
        })
    });
    Some((r, if bits == 512 { "512-bit" } else { "256-bit" }))
}

fn gemm_rate<T: Real>(m: usize, k: usize, n: usize, transposed: bool) -> f64 {
    let mut rng = flowspec_runtime::rng_from_seed(3);
    let mut fill =
        |r, c| Array2::from_shape_simple_fn((r, c), || T::of(rng.random_range(-1.0..1.0)));
    let (a, b) = if transposed { (fill(k, m), fill(n, k)) } else { (fill(m, k), fill(k, n)) };
    let (a, b) = if transposed { (a.reversed_axes(), b.reversed_axes()) } else { (a, b) };
    let mut c = Array2::<T>::zeros((m, n));
    rate((2 * m * k * n) as f64, || gemm(a.view(), b.view(), c.view_mut(), false))
}

fn report<T: Real>() {
    let two = match (fma_ceiling::<T>(1), fma_ceiling::<T>(2)) {
        (Some((one, width)), Some((two, _))) => {
            println!(
                "{}: FMA ceiling ({width}): {one:.0} GFLOP/s on one core, {two:.0} on two",
                T::DTYPE
            );
            two
        }
        _ => {
            println!("{}: no FMA ceiling measured on this CPU", T::DTYPE);
            f64::NAN
        }
    };
    let shapes = [
        ("C4 b4096 forward, hidden 64x64", (4096, 64, 64), false),
        ("C4 b4096 forward, last layer 64x2", (4096, 64, 2), false),
        ("C4 b4096 gradient passed down, 64x64", (4096, 64, 64), true),
        ("C4 b4096 weight gradient 64x64 (k = 4096)", (64, 4096, 64), true),
        ("reference 4096x256x256", (4096, 256, 256), false),
    ];
    for (what, (m, k, n), transposed) in shapes {
        let r = gemm_rate::<T>(m, k, n, transposed);
        println!(
            "  gemm {m}x{k}x{n} ({what}): {r:.1} GFLOP/s = {:.0}% of two cores' FMA ceiling",
            100.0 * r / two
        );
    }
}

fn main() {
    report::<f32>();
    report::<f64>();
}
