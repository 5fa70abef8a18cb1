//! The machine's measured ceilings against what flowspec's matrix products reach at the sizes
//! of issue 5's largest products (C4: the RealNVP step at batch 4096, MLP 1 -> 64 -> 64 -> 2).
//!
//! `cargo bench -p flowspec-runtime --bench roofline` prints, in GFLOP/s (2mnk / time, median
//! of 7 timed trials of about 0.2 s after a warm-up):
//! - the FMA ceiling: a loop of independent 512-bit (or 256-bit) FMAs on one and two cores,
//!   the same method as `shared/design/DEPENDENCIES.md` section 3;
//! - `flowspec_runtime::gemm::gemm` at each product shape of a C4 batch-4096 training step
//!   (forward, gradient passed down, weight gradient) and at 4096x256x256 for comparison;
//! - one 256-row tile of each conditioner layer on one core (faer plus a bias pass against
//!   `fused_dense`), and of the hidden 64 x 64 layer at 30-70% zero inputs (`fused_dense`
//!   against `fused_dense_after_relu`); `-- tiles` prints only these;
//! - the read bandwidth of one core from L2, streaming as many bytes as C1's conditioner
//!   weights (the floor under `log_prob_one`, which reads every weight once per point).

use flowspec_runtime::gemm::{fused_dense, fused_dense_after_relu, gemm};
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

/// `iters` rounds of 16 independent FMA chains (two FMA ports times a latency of 4 needs at
/// least 8; with 12 the loop measured 129 GFLOP/s on one core where a C loop of 16 gave 172),
/// each a named local so that all 16 live in registers: `$fma(acc, a, b)` over vectors made by `$set1(f64)`; returns their lane sum.
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
            let (mut c12, mut c13, mut c14, mut c15) = (v(12), v(13), v(14), v(15));
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
                c12 = $fma(c12, a, b);
                c13 = $fma(c13, a, b);
                c14 = $fma(c14, a, b);
                c15 = $fma(c15, a, b);
            }
            [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15]
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

/// `passes` reads of `buf` in 64-byte lines into four independent sums; returns their total
/// (so the loads cannot be dropped).
macro_rules! read_kernel {
    ($name:ident, $feat:literal, $vec:ty, $load:ident, $add:ident, $zero:ident, $step:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        unsafe fn $name(buf: &[f32], passes: usize) -> f32 {
            use std::arch::x86_64::*;
            let (mut s0, mut s1, mut s2, mut s3) = ($zero(), $zero(), $zero(), $zero());
            for _ in 0..passes {
                for line in buf.chunks_exact(4 * $step) {
                    let p = line.as_ptr();
                    s0 = $add(s0, $load(p));
                    s1 = $add(s1, $load(p.add($step)));
                    s2 = $add(s2, $load(p.add(2 * $step)));
                    s3 = $add(s3, $load(p.add(3 * $step)));
                }
            }
            let mut lanes = [0f32; 16];
            let s: $vec = $add($add(s0, s1), $add(s2, s3));
            std::ptr::copy_nonoverlapping(
                &s as *const $vec as *const f32,
                lanes.as_mut_ptr(),
                $step,
            );
            lanes.iter().sum()
        }
    };
}

read_kernel!(read_512, "avx512f", __m512, _mm512_loadu_ps, _mm512_add_ps, _mm512_setzero_ps, 16);
read_kernel!(read_256, "avx2", __m256, _mm256_loadu_ps, _mm256_add_ps, _mm256_setzero_ps, 8);

/// One core's read bandwidth in GB/s over a buffer of `bytes` (None off x86-64 or AVX2).
fn read_bandwidth(bytes: usize) -> Option<f64> {
    let buf: Vec<f32> = (0..bytes / 4).map(|i| i as f32 * 1e-9).collect();
    #[cfg(target_arch = "x86_64")]
    let run: fn(&[f32], usize) -> f32 = if is_x86_feature_detected!("avx512f") {
        |b, n| unsafe { read_512(b, n) }
    } else if is_x86_feature_detected!("avx2") {
        |b, n| unsafe { read_256(b, n) }
    } else {
        return None;
    };
    #[cfg(not(target_arch = "x86_64"))]
    return None;
    let passes = (1 << 24) / bytes.max(1);
    // `rate` reports billions of its units per second: here GB/s.
    Some(rate((bytes * passes) as f64, || {
        std::hint::black_box(run(std::hint::black_box(&buf), passes));
    }))
}

/// The FMA ceiling of `threads` cores for `T`, at the widest vector width this CPU has
/// (None off x86-64 or without FMA).
fn fma_ceiling<T: Real>(threads: usize) -> Option<(f64, &'static str)> {
    const ITERS: usize = 1 << 18;
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
    let flops = (2 * 16 * lanes * ITERS * threads) as f64;
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

/// One 256-row tile of a conditioner layer on one core: `gemm` then the bias and ReLU pass
/// that `Mlp::forward` used to run, against `fused_dense` (both in one pass).
fn tile_rates<T: Real>(k: usize, n: usize) -> (f64, Option<f64>) {
    let mut rng = flowspec_runtime::rng_from_seed(4);
    let mut fill =
        |r, c| Array2::from_shape_simple_fn((r, c), || T::of(rng.random_range(-1.0..1.0)));
    let (a, b, bias) = (fill(256, k), fill(k, n), fill(1, n).into_raw_vec_and_offset().0);
    let mut c = Array2::<T>::zeros((256, n));
    let flops = (2 * 256 * k * n) as f64;
    let faer = rate(flops, || {
        gemm(a.view(), b.view(), c.view_mut(), false);
        c.rows_mut().into_iter().for_each(|mut r| {
            r.iter_mut().zip(&bias).for_each(|(v, &b)| *v = (*v + b).max(T::zero()))
        });
    });
    let fits = fused_dense(a.view(), b.view(), Some(&bias), true, c.view_mut());
    let fused = fits.then(|| {
        rate(flops, || {
            fused_dense(a.view(), b.view(), Some(&bias), true, c.view_mut());
        })
    });
    (faer, fused)
}

/// A 256-row tile of C1's hidden 64 x 64 layer on one core whose input is a ReLU's output,
/// half zero (as at initialisation): `fused_dense` against `fused_dense_after_relu`, in
/// GFLOP/s of the dense product (2mnk / time), so the two are comparable.
fn sparse_tile_rates<T: Real>(zero_share: f64) -> (f64, f64) {
    let mut rng = flowspec_runtime::rng_from_seed(5);
    let mut draw = |zero: f64| {
        let v: f64 = rng.random_range(0.0..1.0);
        T::of(if v < zero { 0.0 } else { v })
    };
    let a = Array2::from_shape_simple_fn((256, 64), || draw(zero_share));
    let b = Array2::from_shape_simple_fn((64, 64), || draw(0.0));
    let bias = vec![T::zero(); 64];
    let mut c = Array2::<T>::zeros((256, 64));
    let flops = (2 * 256 * 64 * 64) as f64;
    let dense = rate(flops, || {
        fused_dense(a.view(), b.view(), Some(&bias), true, c.view_mut());
    });
    let sparse = rate(flops, || {
        fused_dense_after_relu(a.view(), b.view(), Some(&bias), true, c.view_mut());
    });
    (dense, sparse)
}

fn report_tiles<T: Real>() {
    for zero in [0.3, 0.5, 0.7] {
        let (dense, sparse) = sparse_tile_rates::<T>(zero);
        println!(
            "  {} tile 256x64x64 + bias + ReLU, {:.0}% zero input, one core: fused_dense {dense:.1}, \
             fused_dense_after_relu {sparse:.1} GFLOP/s (dense-equivalent)",
            T::DTYPE,
            100.0 * zero
        );
    }
    for (k, n) in [(1, 64), (64, 64), (64, 2), (64, 23), (256, 256)] {
        let (faer, fused) = tile_rates::<T>(k, n);
        let fused = fused.map_or("not taken".into(), |r| format!("{r:.1}"));
        println!(
            "  {} tile 256x{k}x{n} + bias + ReLU, one core: gemm {faer:.1}, fused_dense {fused} GFLOP/s",
            T::DTYPE
        );
    }
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

/// C1's conditioner weights per point: 8 couplings of 1 -> 64 -> 64 -> 2 (4,288 weights).
fn report_l2() {
    for (dtype, size) in [("f32", 4), ("f64", 8)] {
        let bytes = 8 * (64 + 64 * 64 + 64 * 2) * size;
        match read_bandwidth(bytes) {
            Some(gbs) => println!(
                "{dtype}: one core reads C1's {} KB of weights at {gbs:.0} GB/s: {:.2} us per point",
                bytes / 1024,
                bytes as f64 / gbs / 1e3
            ),
            None => println!("{dtype}: no read bandwidth measured on this CPU"),
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "tiles") {
        report_tiles::<f32>();
        report_tiles::<f64>();
        return;
    }
    report::<f32>();
    report::<f64>();
    report_tiles::<f32>();
    report_tiles::<f64>();
    report_l2();
}
