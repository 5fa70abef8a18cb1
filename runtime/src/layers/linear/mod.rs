//! Linear flows with a structured matrix, written as the notes write them, generatively:
//! `x = W z + b` (base side `z`, data side `x`). The `*_forward` kernels compute `x` from `z`,
//! the `*_inverse` (normalizing) kernels compute `z = W^{-1} (x - b)` by triangular solves or
//! transposes, never by a general inverse, and the log-determinant `log|det W|` comes from the
//! structure (a sum of log-diagonal terms), never from a general determinant.
//!
//! `cols[i]` is the physical column of logical dimension `i`; `W` acts on the logical order.
//! The kernels gather each row into a small logical-order buffer, work on it, and scatter it
//! back, so the triangular loops index plain slices.
//!
//! Backward passes all follow from `z = W^{-1} (x - b)`: with `gz = dLoss/dz`,
//! `dLoss/dx = W^{-T} gz`, `dLoss/db = -sum_rows dLoss/dx` and
//! `dLoss/dW = -sum_rows (W^{-T} gz) z^T`, plus `-W^{-T} * sum(dld)` from the
//! log-determinant, pushed through each structure's parameterisation.
//!
//! The generative direction's backward passes (`*_forward_backward`) follow from
//! `x = W z + b`: with `gx = dLoss/dx`, `dLoss/dz = W^T gx`, `dLoss/db = sum_rows gx` and
//! `dLoss/dW = sum_rows gx z^T`, plus `W^{-T} * sum(dld)` from the log-determinant.

mod householder;
mod lu;
mod triangular;

pub use householder::{
    householder_backward, householder_forward, householder_forward_backward, householder_inverse,
    Householder,
};
pub use lu::{lu_backward, lu_forward, lu_forward_backward, lu_inverse, Lu};
pub use triangular::{
    lower_triangular_backward, lower_triangular_forward, lower_triangular_forward_backward,
    lower_triangular_inverse, LowerTriangular,
};

use crate::nn::{standard_slice, standard_slice_mut};
use crate::params::join;
use crate::real::Real;
use ndarray::{Array, ArrayView2, ArrayViewMut1, ArrayViewMut2, Dimension, Zip};

/// Calls `f` with the name, shape and elements of `a`.
fn visit_array<T: Real, D: Dimension, F>(prefix: &str, name: &str, a: &Array<T, D>, f: &mut F)
where
    F: FnMut(String, &[usize], &[T]) + ?Sized,
{
    let a = a.as_standard_layout();
    f(join(prefix, name), a.shape(), standard_slice(&a));
}

/// Calls `f` with the name, shape and mutable elements of `a`.
fn visit_array_mut<T: Real, D: Dimension, F>(
    prefix: &str,
    name: &str,
    a: &mut Array<T, D>,
    f: &mut F,
) where
    F: FnMut(String, &[usize], &mut [T]) + ?Sized,
{
    let shape = a.shape().to_vec();
    f(join(prefix, name), &shape, standard_slice_mut(a));
}

/// Adds `delta` to every row's log-determinant.
fn add_ld<T: Real>(mut ld: ArrayViewMut1<T>, delta: T) {
    ld += delta;
}

/// Runs `f` on every row of `x`, gathered into logical order (`buf[i] = row[cols[i]]`), and
/// writes the result back to the same columns.
fn map_rows<T: Real>(cols: &[usize], mut x: ArrayViewMut2<T>, mut f: impl FnMut(&mut [T])) {
    let mut buf = vec![T::zero(); cols.len()];
    for mut row in x.rows_mut() {
        buf.iter_mut().zip(cols).for_each(|(b, &c)| *b = row[c]);
        f(&mut buf);
        buf.iter().zip(cols).for_each(|(&b, &c)| row[c] = b);
    }
}

/// Runs `f(x_row, g_row)` on the logical-order rows of the layer input `x_in` and of the
/// gradient `g`, then writes `g_row` back (`x_row` is a scratch copy `f` may overwrite).
fn map_rows_backward<T: Real>(
    cols: &[usize],
    x_in: ArrayView2<T>,
    mut g: ArrayViewMut2<T>,
    mut f: impl FnMut(&mut [T], &mut [T]),
) {
    debug_assert_eq!(x_in.dim(), g.dim(), "linear backward: shapes");
    let (mut xb, mut gb) = (vec![T::zero(); cols.len()], vec![T::zero(); cols.len()]);
    Zip::from(x_in.rows()).and(g.rows_mut()).for_each(|xr, mut gr| {
        for ((xv, gv), &c) in xb.iter_mut().zip(gb.iter_mut()).zip(cols) {
            (*xv, *gv) = (xr[c], gr[c]);
        }
        f(&mut xb, &mut gb);
        gb.iter().zip(cols).for_each(|(&v, &c)| gr[c] = v);
    });
}

/// `sum_{j in range} m[i, j] * y[j]`.
#[inline]
fn dot_row<T: Real>(m: &ArrayView2<T>, i: usize, y: &[T], range: std::ops::Range<usize>) -> T {
    range.map(|j| m[[i, j]] * y[j]).fold(T::zero(), |a, b| a + b)
}

/// Solves `(strict_lower(m) + D) y' = y` in place, `D = diag(1 / inv_diag)` (identity if
/// `None`). Pass `m.t()` to solve with the transpose of a strictly-upper factor.
fn solve_lower<T: Real>(m: ArrayView2<T>, inv_diag: Option<&[T]>, y: &mut [T]) {
    for i in 0..y.len() {
        let acc = y[i] - dot_row(&m, i, y, 0..i);
        y[i] = inv_diag.map_or(acc, |s| acc * s[i]);
    }
}

/// Solves `(strict_upper(m) + D) y' = y` in place; see [`solve_lower`].
fn solve_upper<T: Real>(m: ArrayView2<T>, inv_diag: Option<&[T]>, y: &mut [T]) {
    let n = y.len();
    for i in (0..n).rev() {
        let acc = y[i] - dot_row(&m, i, y, i + 1..n);
        y[i] = inv_diag.map_or(acc, |s| acc * s[i]);
    }
}

/// `z <- (strict_lower(m) + diag) z` in place (unit diagonal if `None`). Descending order,
/// so every `z[j]`, `j < i`, is still an input when row `i` reads it.
fn mul_lower<T: Real>(m: ArrayView2<T>, diag: Option<&[T]>, z: &mut [T]) {
    for i in (0..z.len()).rev() {
        let own = diag.map_or(z[i], |s| s[i] * z[i]);
        z[i] = own + dot_row(&m, i, z, 0..i);
    }
}

/// `z <- (strict_upper(m) + diag) z` in place; ascending order for the same reason.
fn mul_upper<T: Real>(m: ArrayView2<T>, diag: Option<&[T]>, z: &mut [T]) {
    let n = z.len();
    for i in 0..n {
        let own = diag.map_or(z[i], |s| s[i] * z[i]);
        z[i] = own + dot_row(&m, i, z, i + 1..n);
    }
}

/// `grad[i, j] -= a[i] * b[j]` for the strictly lower (`lower`) or strictly upper entries:
/// the gradient of `-a^T M b` with respect to the entries of `M` the structure uses.
fn sub_outer<T: Real>(grad: &mut ndarray::Array2<T>, a: &[T], b: &[T], lower: bool) {
    add_outer(grad, -T::one(), a, b, lower);
}

/// `grad[i, j] += c * a[i] * b[j]` on the same entries as [`sub_outer`].
fn add_outer<T: Real>(grad: &mut ndarray::Array2<T>, c: T, a: &[T], b: &[T], lower: bool) {
    let n = a.len();
    for i in 0..n {
        let js = if lower { 0..i } else { i + 1..n };
        for j in js {
            grad[[i, j]] += c * a[i] * b[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    /// A unit-free check of the four triangular helpers against dense products.
    #[test]
    fn triangular_helpers_match_dense_algebra() {
        let m: Array2<f64> = array![[9.0, 7.0, 5.0], [0.5, 9.0, -2.0], [1.5, -0.25, 9.0]];
        let diag = [2.0, 0.5, 4.0];
        let inv: Vec<f64> = diag.iter().map(|d| 1.0 / d).collect();
        let z = [0.3, -1.2, 0.7];
        let low = array![[2.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1.5, -0.25, 4.0]];
        let up = array![[1.0, 7.0, 5.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]];
        for (dense, is_lower, d) in [(low, true, Some(&diag[..])), (up, false, None)] {
            let mut y = z;
            if is_lower {
                mul_lower(m.view(), d, &mut y);
            } else {
                mul_upper(m.view(), d, &mut y);
            }
            let want = dense.dot(&ndarray::arr1(&z));
            assert!(y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12), "{y:?} {want}");
            let inv_d = d.map(|_| &inv[..]);
            if is_lower {
                solve_lower(m.view(), inv_d, &mut y);
            } else {
                solve_upper(m.view(), inv_d, &mut y);
            }
            assert!(y.iter().zip(&z).all(|(a, b)| (a - b).abs() < 1e-12), "{y:?}");
        }
    }
}
