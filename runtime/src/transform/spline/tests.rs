//! Tests of the rational-quadratic spline: the generic transformer checks, plus its edges
//! (the interval bounds, the knots, far tails, extreme raw parameters).

use super::*;
use crate::layers::testutil::{assert_close, rng, uniform};
use crate::transform::testutil::{check_duals, check_identity, check_transformer, eval, eval_dual};

/// `3k - 1` raw parameters drawn from `(-scale, scale)`.
fn raw(k: usize, seed: u64, scale: f64) -> Vec<f64> {
    uniform(&mut rng(seed), 1, 3 * k - 1, scale).into_raw_vec_and_offset().0
}

/// Both maps at `x` are finite, with finite dual derivatives.
fn assert_finite(t: &RqSpline, x: f64, p: &[f64]) {
    for inv in [false, true] {
        let (y, ld) = eval(t, inv, x, p);
        assert!(y.is_finite() && ld.is_finite(), "inv={inv} at {x}: {y} {ld}");
        let (y, ld) = eval_dual(t, inv, x, p);
        let du = y.du.iter().chain(&ld.du);
        assert!(du.clone().all(|d| d.is_finite()), "inv={inv} at {x}: dual {y:?} {ld:?}");
    }
}

#[test]
fn round_trip_log_det_and_gradients() {
    let t = RqSpline { bins: 4, bound: 3.0 };
    let xs = [-2.9, -1.3, -0.2, 0.4, 1.1, 2.2, 2.95, -4.0, 5.0];
    check_transformer(&t, &xs, &raw(4, 1, 1.5));
    let t = RqSpline { bins: 10, bound: 2.0 };
    check_transformer(&t, &[-1.99, -0.7, 0.05, 0.9, 1.6, 1.999], &raw(10, 2, 2.0));
    check_transformer(&RqSpline { bins: 1, bound: 1.0 }, &[-0.5, 0.5], &[0.3, -0.2]);
    check_identity(&RqSpline { bins: 8, bound: 5.0 }, &[-7.0, -5.0, -2.3, 0.0, 1.1, 4.99, 5.0]);
}

#[test]
fn at_and_around_the_bounds() {
    let (t, b) = (RqSpline { bins: 5, bound: 2.0 }, 2.0);
    let p = raw(5, 3, 2.0);
    for x in [b, -b, b - 1e-12, -b + 1e-12, b + 1e-12, -b - 1e-12, b + 1e-3, b - 1e-3] {
        assert_finite(&t, x, &p);
        // t(+-B) = +-B with slope 1: value and log-derivative are continuous at the bounds.
        for inv in [false, true] {
            let (y, ld) = eval(&t, inv, x, &p);
            let gap = (x.abs() - b).abs();
            assert!((y - x).abs() <= 4.0 * gap + 1e-12 && ld.abs() <= 1e3 * gap + 1e-9, "{x}");
        }
    }
    for x in [b - 1e-3, b + 1e-3, -b + 1e-3, -b - 1e-3] {
        check_duals(&t, false, x, &p);
        check_duals(&t, true, x, &p);
    }
}

#[test]
fn far_tails_are_the_identity_with_clean_gradients() {
    let t = RqSpline { bins: 6, bound: 3.0 };
    let p = raw(6, 4, 3.0);
    for x in [1e6, -1e6, 1e300, -1e300, f64::INFINITY, f64::NEG_INFINITY] {
        for inv in [false, true] {
            assert_eq!(eval(&t, inv, x, &p), (x, 0.0));
            let (y, ld) = eval_dual(&t, inv, x, &p);
            assert!(y.du[0] == 1.0 && y.du[1..].iter().chain(&ld.du).all(|&d| d == 0.0));
        }
    }
    let (y, ld) = eval(&t, false, f64::NAN, &p);
    assert!(y.is_nan() && ld == 0.0);
}

#[test]
fn continuous_with_matching_slopes_at_the_knots() {
    let (k, b) = (5, 2.5);
    let t = RqSpline { bins: k, bound: b };
    let p = raw(k, 5, 2.0);
    for (axis, inv) in [(&p[..k], false), (&p[k..2 * k], true)] {
        let knots = Knots::<f64, f64>::new(axis, b);
        for j in 1..k {
            let v = knots.edges(j).0;
            let (lo, hi) = (eval(&t, inv, v - 1e-10, &p), eval(&t, inv, v + 1e-10, &p));
            assert!((lo.0 - hi.0).abs() < 1e-8 && (lo.1 - hi.1).abs() < 1e-6, "knot {j}");
            let (y, ld) = eval(&t, inv, v, &p);
            let back = eval(&t, !inv, y, &p);
            assert!((back.0 - v).abs() < 1e-12 && (back.1 + ld).abs() < 1e-10, "knot {j}");
            assert_finite(&t, v, &p);
        }
    }
}

#[test]
fn extreme_raw_parameters_stay_finite() {
    let (k, b) = (6, 3.0);
    let t = RqSpline { bins: k, bound: b };
    for seed in 0..4 {
        let p: Vec<f64> = raw(k, 10 + seed, 1.0).iter().map(|v| 50f64.copysign(*v)).collect();
        for i in 0..=140 {
            let x = -3.5 + 7.0 * i as f64 / 140.0;
            assert_finite(&t, x, &p);
            let (y, ld) = eval(&t, false, x, &p);
            let (x2, ld2) = eval(&t, true, y, &p);
            assert!((x2 - x).abs() < 1e-6 && (ld + ld2).abs() < 1e-6, "{seed} {x}: {x2}");
        }
    }
}

#[test]
fn single_precision_and_degenerate_settings_do_not_panic() {
    let t = RqSpline { bins: 8, bound: 4.0 };
    let p: Vec<f32> = raw(8, 6, 50.0).iter().map(|&v| v as f32).collect();
    for x in [-4f32, -3.999, -1.0, 0.0, 0.7, 3.9999, 4.0, 1e30] {
        let (y, ld) = Transformer::<f32>::apply(&t, x, &p);
        let (x2, ld2) = Transformer::<f32>::invert(&t, y, &p);
        assert!(y.is_finite() && ld.is_finite() && x2.is_finite() && ld2.is_finite(), "{x}");
    }
    for t in [RqSpline { bins: 0, bound: 3.0 }, RqSpline { bins: 3, bound: 0.0 }] {
        let p = vec![0.3; Transformer::<f64>::n_params(&t)];
        assert_eq!(eval(&t, false, 0.0, &p), (0.0, 0.0));
        assert_eq!(eval(&t, true, 0.0, &p), (0.0, 0.0));
    }
    let nan = vec![f64::NAN; 8];
    let _ = eval(&RqSpline { bins: 3, bound: 1.0 }, false, 0.5, &nan);
    let _ = eval(&RqSpline { bins: 3, bound: 1.0 }, true, 0.5, &nan);
}

#[test]
fn fast_vjp_matches_duals_along_every_direction() {
    let (wy, wl) = (0.7, -1.3);
    for (k, scale, seed) in [(1, 1.0, 40), (3, 2.0, 41), (8, 3.0, 42), (8, 50.0, 43), (10, 1.0, 44)]
    {
        let t = RqSpline { bins: k, bound: 2.0 };
        let p = raw(k, seed, scale);
        let grid = (0..=60).map(|i| -2.5 + 5.0 * i as f64 / 60.0);
        for x in grid.chain([-2.0, 2.0, 1e6, f64::NAN]) {
            for inv in [false, true] {
                let (y, l) = eval_dual(&t, inv, x, &p);
                let want: Vec<f64> = (0..3 * k).map(|m| wy * y.du[m] + wl * l.du[m]).collect();
                let mut out = vec![f64::NAN; 3 * k];
                assert!(Transformer::<f64>::vjp(&t, inv, x, &p, wy, wl, &mut out));
                assert_close(&format!("K={k} scale={scale} inv={inv} x={x}"), &out, &want, 1e-9);
            }
        }
    }
}

/// The real-valued maps (softmax weights computed up front, up to 32 bins; streamed beyond)
/// agree with the generic ones on reals, inside, on the bounds, in the tails and at NaN.
#[test]
fn real_valued_maps_match_the_generic_ones() {
    for (k, seed) in [(1, 20), (8, 21), (32, 22), (40, 23)] {
        let t = RqSpline { bins: k, bound: 3.0 };
        let p = raw(k, seed, 2.5);
        for x in [-3.0, -2.2, -0.4, 0.0, 0.7, 1.9, 2.999, 3.0, -7.0, 9.0, f64::NAN] {
            for inv in [false, true] {
                let want = eval(&t, inv, x, &p);
                let got = if inv { t.invert_value(x, &p) } else { t.apply_value(x, &p) };
                if x.is_nan() {
                    assert!(got.0.is_nan(), "{k} bins inv={inv}: NaN in, {got:?} out");
                    continue;
                }
                let what = format!("{k} bins, inv={inv}, x={x}");
                assert_close(&what, &[got.0, got.1], &[want.0, want.1], 1e-13);
            }
        }
    }
}

/// The column map ([`Transformer::eval_rows`], rows in SIMD lanes up to 32 bins) agrees with
/// the per-element maps, for whole chunks and remainders, inside, on the bounds, in the
/// tails and at NaN, in f64 and f32, with per-row and shared (stride 0) parameters.
#[test]
fn row_maps_match_the_per_element_ones() {
    for (k, seed) in [(1, 30), (2, 31), (8, 32), (32, 33), (40, 34)] {
        let t = RqSpline { bins: k, bound: 3.0 };
        let np = 3 * k - 1;
        for n in [1, 15, 16, 17, 33, 64] {
            // Row r's parameters at r * stride + 2 (other columns around them).
            let stride = np + 5;
            let p = uniform(&mut rng(seed + n as u64), 1, n * stride + 2, 2.5);
            let p = p.as_slice().unwrap();
            let special = [-3.0, 3.0, -7.0, 9.0, f64::NAN, 2.999, -2.2, 0.0, f64::INFINITY];
            let xs: Vec<f64> =
                (0..n)
                    .map(|r| {
                        if r % 3 == 0 {
                            special[r / 3 % 9]
                        } else {
                            -3.2 + 6.4 * r as f64 / n as f64
                        }
                    })
                    .collect();
            for inv in [false, true] {
                for shared in [false, true] {
                    let stride = if shared { 0 } else { stride };
                    let what = format!("{k} bins, n={n}, inv={inv}, shared={shared}");
                    check_rows(&t, inv, &xs, &p[2..], stride, &what);
                }
            }
        }
    }
}

/// `eval_rows` in f64 and f32 against `apply_value` / `invert_value` per element.
fn check_rows(t: &RqSpline, inv: bool, xs: &[f64], p: &[f64], stride: usize, what: &str) {
    let np = Transformer::<f64>::n_params(t);
    let (mut got, mut ld) = (xs.to_vec(), vec![0.5; xs.len()]);
    t.eval_rows(inv, &mut got, p, stride, &mut ld);
    let p32: Vec<f32> = p.iter().map(|&v| v as f32).collect();
    let (mut got32, mut ld32) =
        (xs.iter().map(|&v| v as f32).collect::<Vec<_>>(), vec![0.5; xs.len()]);
    t.eval_rows(inv, &mut got32, &p32, stride, &mut ld32);
    for (r, &x) in xs.iter().enumerate() {
        let q = &p[r * stride..r * stride + np];
        let want = if inv { t.invert_value(x, q) } else { t.apply_value(x, q) };
        let at = format!("{what}, row {r}, x={x}");
        if !x.is_finite() {
            // The identity: NaN and the infinities pass through with log-det 0.
            let same = |a: f64| a.to_bits() == x.to_bits();
            assert!(same(got[r]) && same(got32[r] as f64), "{at}: {} {}", got[r], got32[r]);
            assert!(ld[r] == 0.5 && ld32[r] == 0.5, "{at}: log-det");
            continue;
        }
        assert_close(&at, &[got[r], ld[r] - 0.5], &[want.0, want.1], 1e-12);
        let q32 = &p32[r * stride..r * stride + np];
        let x32 = x as f32;
        let want = if inv { t.invert_value(x32, q32) } else { t.apply_value(x32, q32) };
        let got = [got32[r] as f64, ld32[r] as f64 - 0.5];
        assert_close(&format!("{at} f32"), &got, &[want.0 as f64, want.1 as f64], 1e-5);
    }
}
