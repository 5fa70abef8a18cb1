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
//! Nothing here may be used for a pass whose rows interact (actnorm's data-dependent
//! initialisation, the mean over a batch in a training step's loss): only row-wise maps.

use crate::gemm::{self, TILE_ROWS};
use ndarray::{ArrayViewMut1, ArrayViewMut2, Axis};
use std::cell::Cell;

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

/// `f` over consecutive tiles of near-equal size (at most [`TILE_ROWS`] rows), so no tile is
/// a sliver: a few-row product takes another kernel than a full tile.
fn tiles<T, S>(
    mut h: ArrayViewMut2<T>,
    mut ld: ArrayViewMut1<T>,
    s: &mut S,
    f: &impl Fn(&mut S, ArrayViewMut2<T>, ArrayViewMut1<T>),
) {
    let n = h.nrows();
    let count = n.div_ceil(TILE_ROWS).max(1);
    let mut start = 0;
    for i in 0..count {
        let end = n * (i + 1) / count;
        let rows = ndarray::s![start..end, ..];
        f(s, h.slice_mut(rows), ld.slice_mut(ndarray::s![start..end]));
        start = end;
    }
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

    #[test]
    fn serial_disables_the_split() {
        let (h, _) = serial(|| mark(5000));
        assert!(h.column(0).iter().all(|&r| r == 5000.0));
        assert!(may_split());
    }
}
