//! Whole-flow parallelism over rows: the batch directions (`inverse`, `forward`, and so
//! `log_prob` and `sample`) treat every row independently, so a large batch is split into
//! two halves on two threads, each running the *whole* flow (conditioners, coupling kernels,
//! log-dets) over its rows in tiles of [`TILE_ROWS`]. One fork-join per call instead of one
//! per matrix product, and a tile's activations stay in cache from one layer to the next.
//!
//! Inside a half, [`gemm::row_parts`] answers 1, so the MLPs and the sequential solve do not
//! split again. [`serial`] forces the one-thread, one-block path, which the tests use as the
//! reference the split path must reproduce.
//!
//! A training step ([`split_step`]) splits the same way: its loss and gradient are sums over
//! rows (each weighted by the whole batch's `1 / n`), so each half runs the whole forward and
//! backward pass on its rows and the two sums are added.
//!
//! Nothing here may be used for a pass whose rows interact (actnorm's data-dependent
//! initialisation): only row-wise maps and sums over rows.

use crate::gemm::{self, TILE_ROWS};
use crate::real::Real;
use ndarray::{ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use std::cell::Cell;
use std::mem::MaybeUninit;

thread_local! {
    /// Set while this thread runs one part of a split batch, or inside [`serial`].
    static NO_SPLIT: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread may split its work over more threads (false inside a half of a split
/// batch and inside [`serial`]).
pub fn may_split() -> bool {
    !NO_SPLIT.with(Cell::get)
}

/// Whether work may be forked onto a second thread here: there is one, this thread is not
/// already one of the pool's (no nested fork-joins) and [`may_split`] holds.
pub fn may_fork() -> bool {
    rayon::current_num_threads() > 1 && rayon::current_thread_index().is_none() && may_split()
}

/// Runs `f` with every split and row tiling of this module and of the MLPs disabled on this
/// thread: the whole batch in one block, the reference for the split path.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoSplit::set();
    f()
}

/// Restores the previous [`NO_SPLIT`] state on drop (also when `f` panics).
struct NoSplit(bool);

impl NoSplit {
    fn set() -> Self {
        NoSplit(NO_SPLIT.with(|c| c.replace(true)))
    }
}

impl Drop for NoSplit {
    fn drop(&mut self) {
        NO_SPLIT.with(|c| c.set(self.0));
    }
}

/// Applies a row-wise pass `f(scratch, rows of h, rows of ld)` to the whole batch: in one
/// call below [`gemm::PAR_MIN_ROWS`] rows (or on one thread), else in two halves on two
/// threads, each half in tiles of about [`TILE_ROWS`] rows with its own `init()` scratch.
/// `f` must treat rows independently; then the result does not depend on the split.
pub fn map_rows<T, S>(
    h: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, ArrayViewMut2<T>, ArrayViewMut1<T>) + Sync,
) where
    T: Send + Sync,
{
    debug_assert_eq!(h.nrows(), ld.len(), "map_rows: ld length");
    let n = h.nrows();
    if gemm::row_parts(n) == 1 {
        return f(&mut init(), h, ld);
    }
    let (h0, h1) = h.split_at(Axis(0), n / 2);
    let (l0, l1) = ld.split_at(Axis(0), n / 2);
    let half = |h: ArrayViewMut2<T>, ld: ArrayViewMut1<T>| {
        let _guard = NoSplit::set();
        tiles(h, ld, &mut init(), &f);
    };
    rayon::join(|| half(h0, l0), || half(h1, l1));
}

/// Rows from which a training step's batch is split in two halves on two threads (see
/// [`split_step`]). Measured on C1's step (ms, split against one thread): 32 rows 0.270
/// against 0.211, 64 rows level (0.352 / 0.339 f32), 128 rows 0.479 against 0.589 (f32) and
/// 0.813 against 1.051 (f64, 127 rows unsplit).
pub const STEP_MIN_ROWS: usize = 128;

/// The loss and flat parameter gradient of a training step that is a sum over rows, computed
/// by `part(rows, inv_n)` (`inv_n`: the weight of one row, `1 / n` for the batch mean). From
/// [`STEP_MIN_ROWS`] rows the halves run on two threads, each through the whole flow (no
/// further split inside), and their losses and gradients are added: the whole step costs
/// one fork-join. Each half's rows are weighted by the *whole* batch's `inv_n`, so the sum is
/// the batch mean, whatever the split.
pub fn split_step<T: Real>(
    x: ArrayView2<T>,
    part: impl Fn(ArrayView2<T>, T) -> (T, Vec<T>) + Sync,
) -> (T, Vec<T>) {
    let part = |x: ArrayView2<T>, inv_n: T, slot: &mut Option<Vec<T>>| {
        let (loss, grad) = part(x, inv_n);
        *slot = Some(grad);
        loss
    };
    split_step_in(x, &mut [None, None], part, |g: &Vec<T>, f| f(g))
}

/// [`split_step`] for a gradient kept in a structure `G` of its own, whose tensors `visit`
/// gives in the flat order: `part(rows, inv_n, slot)` leaves its gradient in `slot`. The
/// two slots are the caller's to keep from step to step (no reallocation), and the flat
/// gradient is written in one pass over both halves' structures, on two threads: the sum
/// and the flattening fused, where flattening each half and then adding them made three
/// passes over C2's 4.6 MB (f64) of gradient.
pub fn split_step_in<T: Real, G: Sync + Send>(
    x: ArrayView2<T>,
    slots: &mut [Option<G>; 2],
    part: impl Fn(ArrayView2<T>, T, &mut Option<G>) -> T + Sync,
    visit: impl Fn(&G, &mut dyn FnMut(&[T])) + Sync,
) -> (T, Vec<T>) {
    let n = x.nrows();
    let inv_n = T::of(1.0 / n.max(1) as f64);
    let [s0, s1] = slots;
    let left = "split_step: `part` leaves its gradient in its slot";
    if n < STEP_MIN_ROWS || !may_fork() {
        let loss = part(x, inv_n, s0);
        return (loss, flat_sum(&[s0.as_ref().expect(left)], &visit));
    }
    let (x0, x1) = x.split_at(Axis(0), n / 2);
    let half = |x: ArrayView2<T>, slot: &mut Option<G>| {
        let _guard = NoSplit::set();
        part(x, inv_n, slot)
    };
    let (l0, l1) = rayon::join(|| half(x0, s0), || half(x1, s1));
    let gs = [s0.as_ref().expect(left), s1.as_ref().expect(left)];
    (l0 + l1, flat_sum(&gs, &visit))
}

/// The sum of the gradients `gs`, flat in `visit`'s order; a long one on two threads, each
/// writing its half of the output (allocated, not zero-filled: a fill was one more pass).
fn flat_sum<T: Real, G: Sync>(
    gs: &[&G],
    visit: &(impl Fn(&G, &mut dyn FnMut(&[T])) + Sync),
) -> Vec<T> {
    if let [g] = gs {
        // One visit, as before the halves were summed here: every visit names each tensor.
        let mut out = Vec::new();
        visit(g, &mut |d| out.extend_from_slice(d));
        return out;
    }
    let count = |g: &G| {
        let mut len = 0;
        visit(g, &mut |d| len += d.len());
        len
    };
    let len = count(gs[0]);
    debug_assert!(gs.iter().all(|&g| count(g) == len), "split_step: gradients of one shape");
    let mut out = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    let whole = if len >= ADD_SPLIT_LEN && may_fork() {
        let (o0, o1) = spare.split_at_mut(len / 2);
        let (a, b) =
            rayon::join(|| sum_range(gs, visit, o0, 0), || sum_range(gs, visit, o1, len / 2));
        a && b
    } else {
        sum_range(gs, visit, spare, 0)
    };
    assert!(whole, "split_step: a gradient's tensors changed while they were read");
    // SAFETY: `sum_range` wrote every position of `0..len` (checked above).
    unsafe { out.set_len(len) };
    out
}

/// `out = sum of gs[start .. start + out.len()]` (flat positions), in chunks that stay in
/// cache between the first gradient's copy and the others' additions. False if the first
/// gradient did not cover every position (then `out` is not all written).
fn sum_range<T: Real, G>(
    gs: &[&G],
    visit: &impl Fn(&G, &mut dyn FnMut(&[T])),
    out: &mut [MaybeUninit<T>],
    start: usize,
) -> bool {
    for (c, chunk) in out.chunks_mut(SUM_CHUNK).enumerate() {
        let at = start + c * SUM_CHUNK;
        let mut written = 0;
        overlaps(gs[0], visit, at, chunk.len(), |r, d| {
            written += r.len();
            chunk[r].iter_mut().zip(d).for_each(|(o, &v)| {
                o.write(v);
            });
        });
        if written != chunk.len() {
            return false;
        }
        // SAFETY: the tensors' ranges are disjoint, so they wrote every position just above;
        // `MaybeUninit<T>` has `T`'s layout. (`assume_init_mut` on slices needs Rust 1.93.)
        let chunk = unsafe { &mut *(chunk as *mut [MaybeUninit<T>] as *mut [T]) };
        for &g in &gs[1..] {
            overlaps(g, visit, at, chunk.len(), |r, d| add_into(&mut chunk[r], d));
        }
    }
    true
}

/// Calls `f(range within the window, values)` for every tensor of `g` that overlaps the flat
/// window `at .. at + len`.
fn overlaps<T, G>(
    g: &G,
    visit: &impl Fn(&G, &mut dyn FnMut(&[T])),
    at: usize,
    len: usize,
    mut f: impl FnMut(std::ops::Range<usize>, &[T]),
) {
    let mut off = 0;
    visit(g, &mut |d| {
        let (lo, hi) = (at.max(off), (at + len).min(off + d.len()));
        if lo < hi {
            f(lo - at..hi - at, &d[lo - off..hi - off]);
        }
        off += d.len();
    });
}

/// Flat positions per chunk of [`sum_range`]: 256 KB of f64, within L2 with its inputs.
const SUM_CHUNK: usize = 1 << 15;

/// `a += b`, vectorised under the CPU dispatch.
fn add_into<T: Real>(a: &mut [T], b: &[T]) {
    crate::nn::simd(
        #[inline(always)]
        || a.iter_mut().zip(b).for_each(|(a, &b)| *a += b),
    )
}

/// Gradient length from which [`flat_sum`] uses both threads.
const ADD_SPLIT_LEN: usize = 1 << 16;

/// `f` over consecutive tiles of near-equal size (at most [`TILE_ROWS`] rows), so no tile is
/// a sliver: a few-row product takes another kernel than a full tile.
fn tiles<T, S>(
    mut h: ArrayViewMut2<T>,
    mut ld: ArrayViewMut1<T>,
    s: &mut S,
    f: &impl Fn(&mut S, ArrayViewMut2<T>, ArrayViewMut1<T>),
) {
    for r in tile_ranges(h.nrows()) {
        let rows = ndarray::s![r.clone(), ..];
        f(s, h.slice_mut(rows), ld.slice_mut(ndarray::s![r]));
    }
}

/// `0..n` cut into consecutive ranges of near-equal size, at most [`TILE_ROWS`] each (one
/// empty range for `n = 0`).
pub(crate) fn tile_ranges(n: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let count = n.div_ceil(TILE_ROWS).max(1);
    (0..count).map(move |i| n * i / count..n * (i + 1) / count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    /// A row-wise pass that records which thread-local state each row saw.
    fn mark(n: usize) -> (Array2<f64>, Array1<f64>) {
        let mut h = Array2::zeros((n, 2));
        let mut ld = Array1::zeros(n);
        map_rows(
            h.view_mut(),
            ld.view_mut(),
            || (),
            |_, mut h, mut ld| {
                let rows = h.nrows() as f64;
                h.column_mut(0).fill(rows);
                h.column_mut(1).fill(if may_split() { 1.0 } else { 0.0 });
                ld += 1.0;
            },
        );
        (h, ld)
    }

    #[test]
    fn small_batches_run_in_one_block() {
        let (h, ld) = mark(1023);
        assert!(h.column(0).iter().all(|&r| r == 1023.0));
        assert!(h.column(1).iter().all(|&s| s == 1.0), "one block may still split inside");
        assert!(ld.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn large_batches_run_in_tiles_that_do_not_split_again() {
        if rayon::current_num_threads() < 2 {
            return;
        }
        let (h, ld) = mark(1500);
        // Halves of 750 rows, each in three tiles of 250.
        assert!(h.column(0).iter().all(|&r| r == 250.0), "{:?}", h.column(0));
        assert!(h.column(1).iter().all(|&s| s == 0.0));
        assert!(ld.iter().all(|&v| v == 1.0), "every row visited once");
        assert!(may_split(), "the flag is restored on the calling thread");
    }

    #[test]
    fn tiles_cover_every_row_once_without_slivers() {
        for n in [1, 255, 256, 257, 513, 5000] {
            let mut h = Array2::<f64>::zeros((n, 1));
            let mut ld = Array1::<f64>::zeros(n);
            let mut sizes = Vec::new();
            tiles(h.view_mut(), ld.view_mut(), &mut sizes, &|s: &mut Vec<usize>, mut h, _| {
                s.push(h.nrows());
                h += 1.0;
            });
            assert!(h.iter().all(|&v| v == 1.0), "n = {n}");
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(*hi <= TILE_ROWS && hi - lo <= 1, "n = {n}: {sizes:?}");
        }
    }

    /// Gradients of several tensors, some across [`SUM_CHUNK`] boundaries, and their flat sum.
    fn tensors(sizes: &[usize], seed: usize) -> Vec<Vec<f64>> {
        let value = |t: usize, i: usize| ((i * 7 + t * 3 + seed) % 13) as f64 * 0.5 - 3.0;
        sizes.iter().enumerate().map(|(t, &n)| (0..n).map(|i| value(t, i)).collect()).collect()
    }

    #[test]
    fn long_gradients_sum_flat_in_two_halves_as_in_one() {
        let visit = |g: &Vec<Vec<f64>>, f: &mut dyn FnMut(&[f64])| g.iter().for_each(|t| f(t));
        for sizes in [&[3, 0, 2][..], &[SUM_CHUNK - 1, 5, ADD_SPLIT_LEN, 0, SUM_CHUNK + 3]] {
            let (a, b) = (tensors(sizes, 1), tensors(sizes, 2));
            let flat = |g: &Vec<Vec<f64>>| g.concat();
            let want: Vec<f64> = flat(&a).iter().zip(flat(&b)).map(|(x, y)| x + y).collect();
            assert_eq!(flat_sum(&[&a, &b], &visit), want, "{sizes:?}");
            assert_eq!(serial(|| flat_sum(&[&a, &b], &visit)), want, "{sizes:?}, serial");
            assert_eq!(flat_sum(&[&a], &visit), flat(&a), "{sizes:?}, one gradient");
        }
    }

    #[test]
    #[should_panic(expected = "split_step: ")]
    fn a_gradient_that_shrinks_while_read_is_an_error_not_garbage() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // The first visit counts 10 values; the later ones give 4 (a debug build's shape check
        // may be what notices).
        let calls = AtomicUsize::new(0);
        let visit = |g: &Vec<f64>, f: &mut dyn FnMut(&[f64])| {
            let n = if calls.fetch_add(1, Ordering::Relaxed) == 0 { 10 } else { 4 };
            f(&g[..n])
        };
        let g = vec![1.0; 10];
        flat_sum(&[&g, &g], &visit);
    }

    /// A step whose loss is `inv_n * sum(x)` and gradient `[inv_n * n_rows, loss]`, recording
    /// whether each part may split again.
    fn step(x: ArrayView2<f64>) -> (f64, Vec<f64>) {
        split_step(x, |x, inv_n| {
            let loss = inv_n * x.sum();
            let inner = if may_split() { 1.0 } else { 0.0 };
            (loss, vec![inv_n * x.nrows() as f64, loss, inner])
        })
    }

    #[test]
    fn split_steps_add_up_to_the_batch_mean() {
        // Called from outside the pool, as a training loop does (inside it, nothing forks).
        let two = rayon::current_num_threads() > 1;
        for n in [0, 1, STEP_MIN_ROWS - 1, STEP_MIN_ROWS, 301] {
            let x = Array2::from_shape_fn((n, 2), |(i, j)| (i * 3 + j) as f64 * 0.25);
            let (loss, g) = step(x.view());
            let mean = if n == 0 { 0.0 } else { x.sum() / n as f64 };
            assert!((loss - mean).abs() <= 1e-12 * mean.abs().max(1.0), "n = {n}");
            let parts = if n >= STEP_MIN_ROWS && two { 2.0 } else { 1.0 };
            assert_eq!(g[0], if n == 0 { 0.0 } else { 1.0 }, "n = {n}: row weights sum to 1");
            assert!((g[1] - mean).abs() <= 1e-12 * mean.abs().max(1.0), "n = {n}");
            // Two halves that may not split again, or one call that may.
            assert_eq!(g[2], if parts == 2.0 { 0.0 } else { 1.0 }, "n = {n}");
        }
        let x = Array2::from_elem((STEP_MIN_ROWS + 1, 2), 1.0);
        assert_eq!(serial(|| step(x.view())).1[2], 0.0, "serial: one call, no split inside");
    }

    #[test]
    fn serial_disables_the_split() {
        let (h, _) = serial(|| mark(5000));
        assert!(h.column(0).iter().all(|&r| r == 5000.0));
        assert!(may_split());
    }
}
