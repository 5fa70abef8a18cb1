//! The generated built-in datasets: 2-D toy densities from the flow literature, made
//! deterministically from fixed seeds so that every run, figure and test sees the same points.
//!
//! | name | generator |
//! |---|---|
//! | `circles` | sklearn `make_circles(factor=0.5, noise=0.05)`, standardized with the train statistics |
//! | `eight_gaussians` | FFJORD's `8gaussians`: centers `4 (cos a, sin a)`, a = k pi/4, std 0.5, all divided by 1.414 |
//! | `checkerboard` | FFJORD's `checkerboard`: uniform on the 8 "black" cells of a 4 x 4 board on [-4, 4]^2 |
//! | `spirals` | FFJORD's `2spirals`: two interleaved spirals, divided by 3, plus N(0, 0.1^2) noise |
//!
//! Each has [`TRAIN_ROWS`] training rows drawn from seed [`TRAIN_SEED`] and [`TEST_ROWS`] test
//! rows drawn, independently, from seed [`TEST_SEED`] (the project's RNG, [`crate::rng_from_seed`]).
//! Random draws are made in f64 in a fixed order, so the data is the same on every platform.

use crate::data::Dataset;
use ndarray::{Array1, Array2, Axis};
use rand::seq::SliceRandom;
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// The generated datasets, in the order `flowspec` lists them.
pub const TOY: &[&str] = &["circles", "eight_gaussians", "checkerboard", "spirals"];
/// Training rows of every generated dataset.
pub const TRAIN_ROWS: usize = 20_000;
/// Test rows of every generated dataset.
pub const TEST_ROWS: usize = 5_000;
/// The seed of the training rows (as moons' `random_state=0`).
pub const TRAIN_SEED: u64 = 0;
/// The seed of the test rows (as moons' `random_state=1`).
pub const TEST_SEED: u64 = 1;

/// The generated dataset `name` (one of [`TOY`]), or `None`.
pub fn toy(name: &str) -> Option<Dataset> {
    let mut train = generate(name, TRAIN_ROWS, TRAIN_SEED)?;
    let mut test = generate(name, TEST_ROWS, TEST_SEED)?;
    if name == "circles" {
        standardize(&mut train, &mut test);
    }
    Some(Dataset { name: name.to_string(), train, test })
}

/// `n` raw rows of the generator `name` (before any standardization), or `None`.
pub fn generate(name: &str, n: usize, seed: u64) -> Option<Array2<f64>> {
    let mut rng = crate::rng_from_seed(seed);
    let x = match name {
        "circles" => circles(n, 0.5, 0.05, &mut rng),
        "eight_gaussians" => eight_gaussians(n, &mut rng),
        "checkerboard" => checkerboard(n, &mut rng),
        "spirals" => spirals(n, &mut rng),
        _ => return None,
    };
    Some(x)
}

/// sklearn's `make_circles`: `n / 2` points evenly spaced (by angle) on the unit circle and the
/// rest on the circle of radius `factor`, rows shuffled, plus N(0, noise^2) on every coordinate.
pub fn circles(n: usize, factor: f64, noise: f64, rng: &mut crate::FlowRng) -> Array2<f64> {
    let n_out = n / 2;
    let n_in = n - n_out;
    let ring = |k: usize, m: usize, r: f64| {
        let a = 2.0 * PI * k as f64 / m as f64; // linspace(0, 2 pi, m, endpoint=False)
        [r * a.cos(), r * a.sin()]
    };
    let mut points: Vec<[f64; 2]> = (0..n_out).map(|k| ring(k, n_out, 1.0)).collect();
    points.extend((0..n_in).map(|k| ring(k, n_in, factor)));
    points.shuffle(rng);
    let mut x = Array2::from_shape_fn((n, 2), |(i, j)| points[i][j]);
    x.mapv_inplace(|v| v + noise * normal(rng));
    x
}

/// FFJORD's `8gaussians`: per row a N(0, 0.5^2 I) offset, then one of 8 centers at radius 4
/// (angles k pi/4), everything divided by 1.414.
pub fn eight_gaussians(n: usize, rng: &mut crate::FlowRng) -> Array2<f64> {
    let (s, d) = (4.0, 4.0 * FRAC_1_SQRT_2);
    let centers = [(s, 0.0), (-s, 0.0), (0.0, s), (0.0, -s), (d, d), (d, -d), (-d, d), (-d, -d)];
    let mut x = Array2::zeros((n, 2));
    for mut row in x.rows_mut() {
        let offset = [0.5 * normal(rng), 0.5 * normal(rng)];
        let (cx, cy) = centers[rng.random_range(0..centers.len())];
        row[0] = (offset[0] + cx) / 1.414;
        row[1] = (offset[1] + cy) / 1.414;
    }
    x
}

/// FFJORD's `checkerboard`: `x1 ~ U[-2, 2)`, `x2 ~ U[0, 1) - 2 b + (floor(x1) mod 2)` with
/// `b ~ {0, 1}`, both times 2. `floor(x1/2) + floor(x2/2)` is always even.
pub fn checkerboard(n: usize, rng: &mut crate::FlowRng) -> Array2<f64> {
    let mut x = Array2::zeros((n, 2));
    for mut row in x.rows_mut() {
        let x1 = 4.0 * rng.random::<f64>() - 2.0;
        let x2 = rng.random::<f64>() - 2.0 * rng.random_range(0..2u32) as f64;
        row[0] = 2.0 * x1;
        row[1] = 2.0 * (x2 + x1.floor().rem_euclid(2.0)); // numpy's % is non-negative too
    }
    x
}

/// FFJORD's `2spirals`: `t = sqrt(u) * 3 pi` (540 degrees), the point
/// `(-t cos t + U[0, 0.5), t sin t + U[0, 0.5))` on one arm or its negation on the other, divided
/// by 3, plus N(0, 0.1^2) noise. Even rows are on the first arm and odd rows on the second,
/// so any prefix of the rows is balanced (FFJORD stacks the arms).
pub fn spirals(n: usize, rng: &mut crate::FlowRng) -> Array2<f64> {
    let mut x = Array2::zeros((n, 2));
    for (i, mut row) in x.rows_mut().into_iter().enumerate() {
        let t = rng.random::<f64>().sqrt() * 540.0 * 2.0 * PI / 360.0;
        let px = -t.cos() * t + 0.5 * rng.random::<f64>();
        let py = t.sin() * t + 0.5 * rng.random::<f64>();
        let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
        row[0] = sign * px / 3.0 + 0.1 * normal(rng);
        row[1] = sign * py / 3.0 + 0.1 * normal(rng);
    }
    x
}

fn normal(rng: &mut crate::FlowRng) -> f64 {
    StandardNormal.sample(rng)
}

/// Standardizes both sets per column with the TRAINING mean and population standard deviation
/// (as the moons data was made), so test data is not peeked at. A constant column is only
/// centred.
pub fn standardize(train: &mut Array2<f64>, test: &mut Array2<f64>) {
    let mean = train.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(train.ncols()));
    let std = train.std_axis(Axis(0), 0.0).mapv(|s| if s > 0.0 { s } else { 1.0 });
    for x in [train, test] {
        *x -= &mean;
        *x /= &std;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(x: &Array2<f64>) -> Vec<u64> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn shapes_and_determinism() {
        for &name in TOY {
            let a = toy(name).unwrap();
            let b = toy(name).unwrap();
            assert_eq!((a.train.dim(), a.test.dim()), ((20_000, 2), (5_000, 2)), "{name}");
            assert_eq!((bits(&a.train), bits(&a.test)), (bits(&b.train), bits(&b.test)), "{name}");
            assert_ne!(a.train.row(0), a.test.row(0), "{name}: train and test differ");
            assert!(a.train.iter().chain(&a.test).all(|v| v.is_finite()), "{name}");
            assert_eq!(a.name, name);
        }
        assert!(toy("moons").is_none() && generate("nope", 3, 0).is_none());
    }

    #[test]
    fn pinned_first_rows() {
        // Pins the generators and the RNG stream, so a change of either (a rand upgrade, a
        // reordered draw) is noticed rather than silently changing every dataset. The tolerance
        // allows for libm differences in sin/cos between platforms.
        for (name, want) in golden() {
            let x = toy(name).unwrap().train;
            let got = [x[[0, 0]], x[[0, 1]]];
            assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-12), "{name}: {got:?}");
        }
    }

    fn golden() -> [(&'static str, [f64; 2]); 4] {
        [
            ("circles", [-0.38247945814007556, -0.8704390383113381]),
            ("eight_gaussians", [-0.1035372343015234, 2.576690022342846]),
            ("checkerboard", [-1.4033978557487465, 2.764478593023347]),
            ("spirals", [-1.273125886579153, -1.3579086517176264]),
        ]
    }

    #[test]
    fn circles_radii_and_standardization() {
        let raw = circles(2001, 0.5, 0.0, &mut crate::rng_from_seed(3));
        let r: Vec<f64> = raw.rows().into_iter().map(|p| p.dot(&p).sqrt()).collect();
        assert_eq!(r.iter().filter(|&&v| (v - 1.0).abs() < 1e-12).count(), 1000);
        assert_eq!(r.iter().filter(|&&v| (v - 0.5).abs() < 1e-12).count(), 1001);
        // Shuffled: the outer circle is not simply the first half.
        assert!(r[..1000].iter().any(|&v| v < 0.75));
        let d = toy("circles").unwrap();
        let mean = d.train.mean_axis(Axis(0)).unwrap();
        let std = d.train.std_axis(Axis(0), 0.0);
        assert!(
            mean.iter().all(|m| m.abs() < 1e-12) && std.iter().all(|s| (s - 1.0).abs() < 1e-12)
        );
        let test_mean = d.test.mean_axis(Axis(0)).unwrap();
        assert!(test_mean.iter().all(|m| m.abs() < 0.05) && test_mean.iter().all(|&m| m != 0.0));
    }

    #[test]
    fn eight_gaussians_clusters() {
        let x = eight_gaussians(8000, &mut crate::rng_from_seed(4));
        let radius = 4.0 / 1.414;
        let mut counts = [0usize; 8];
        for p in x.rows() {
            let angle = p[1].atan2(p[0]).rem_euclid(2.0 * PI);
            let k = (angle / (PI / 4.0)).round() as usize % 8;
            counts[k] += 1;
            let (cx, cy) =
                (radius * (k as f64 * PI / 4.0).cos(), radius * (k as f64 * PI / 4.0).sin());
            assert!(((p[0] - cx).powi(2) + (p[1] - cy).powi(2)).sqrt() < 6.0 * 0.5 / 1.414);
        }
        assert!(counts.iter().all(|&c| (850..1150).contains(&c)), "{counts:?}");
    }

    #[test]
    fn checkerboard_cells() {
        let x = checkerboard(8000, &mut crate::rng_from_seed(5));
        let mut cells = std::collections::BTreeMap::new();
        for p in x.rows() {
            assert!(p.iter().all(|v| (-4.0..4.0).contains(v)), "{p}");
            let (i, j) = ((p[0] / 2.0).floor() as i64, (p[1] / 2.0).floor() as i64);
            assert_eq!((i + j).rem_euclid(2), 0, "{p} is on a white cell");
            *cells.entry((i, j)).or_insert(0usize) += 1;
        }
        assert_eq!(cells.len(), 8);
        assert!(cells.values().all(|&c| (850..1150).contains(&c)), "{cells:?}");
    }

    #[test]
    fn spirals_arms_are_point_symmetric() {
        let x = spirals(10_000, &mut crate::rng_from_seed(6));
        let mean = x.mean_axis(Axis(0)).unwrap();
        assert!(mean.iter().all(|m| m.abs() < 0.05), "{mean}");
        let max_r = x.rows().into_iter().map(|p| p.dot(&p).sqrt()).fold(0.0, f64::max);
        assert!(max_r < (3.0 * PI + 0.8) / 3.0 + 0.6 && max_r > 2.5, "{max_r}");
        // Even rows are the first arm and odd rows its mirror image, so their means cancel.
        let even = x.slice(ndarray::s![0..;2, ..]).mean_axis(Axis(0)).unwrap();
        let odd = x.slice(ndarray::s![1..;2, ..]).mean_axis(Axis(0)).unwrap();
        assert!((&even + &odd).iter().all(|v| v.abs() < 0.05));
    }
}
