//! Per-dimension parameters of an elementwise layer: named `D x k` tensors whose rows,
//! concatenated in order, are the raw parameters of each logical dimension.

use crate::nn::{standard_slice, standard_slice_mut};
use crate::params::{join, Params};
use crate::real::Real;
use ndarray::Array2;

/// One named `D x k` tensor. Fixed (non-trainable) tensors are part of the layer but not of
/// its parameter vector or weights file.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamTensor<T> {
    pub name: &'static str,
    pub value: Array2<T>,
    pub trainable: bool,
}

/// The parameters of an elementwise layer. The raw parameter vector of logical dimension `i`
/// is row `i` of every tensor, concatenated in order. A layer whose transformer has no
/// parameters has no tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ElementParams<T> {
    pub tensors: Vec<ParamTensor<T>>,
}

impl<T: Real> ElementParams<T> {
    /// The same tensors (names, shapes, trainability) filled with zeros: a gradient
    /// accumulator.
    pub fn zeros_like(&self) -> Self {
        let tensors = self
            .tensors
            .iter()
            .map(|t| ParamTensor { value: Array2::zeros(t.value.dim()), ..*t })
            .collect();
        Self { tensors }
    }

    /// The number of raw parameters per dimension (the sum of the tensors' widths).
    pub fn width(&self) -> usize {
        self.tensors.iter().map(|t| t.value.ncols()).sum()
    }

    /// Every dimension's raw parameters, row-major: row `i` is dimension `i`'s vector.
    pub(crate) fn raw_rows(&self, d: usize) -> Array2<T> {
        let mut out = Array2::zeros((d, self.width()));
        let mut at = 0;
        for t in &self.tensors {
            let k = t.value.ncols();
            debug_assert_eq!(
                t.value.nrows(),
                d,
                "ElementParams: tensor {} has the wrong height",
                t.name
            );
            out.slice_mut(ndarray::s![.., at..at + k]).assign(&t.value);
            at += k;
        }
        out
    }

    /// Adds `g`, dimension `i`'s gradient over its concatenated raw vector, into the tensors.
    pub(crate) fn add_row(&mut self, i: usize, g: &[T]) {
        let mut rest = g;
        for t in &mut self.tensors {
            let (mine, tail) = rest.split_at(t.value.ncols());
            t.value.row_mut(i).iter_mut().zip(mine).for_each(|(a, &b)| *a += b);
            rest = tail;
        }
    }
}

impl<T: Real> Params<T> for ElementParams<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &[T])) {
        for t in self.tensors.iter().filter(|t| t.trainable) {
            let v = t.value.as_standard_layout();
            f(join(prefix, t.name), v.shape(), standard_slice(&v));
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        for t in self.tensors.iter_mut().filter(|t| t.trainable) {
            let shape = [t.value.nrows(), t.value.ncols()];
            f(join(prefix, t.name), &shape, standard_slice_mut(&mut t.value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn two_tensors() -> ElementParams<f64> {
        let tensor = |name, value, trainable| ParamTensor { name, value, trainable };
        ElementParams {
            tensors: vec![
                tensor("shift", array![[1.0], [2.0]], true),
                tensor("fixed", array![[9.0, 8.0], [7.0, 6.0]], false),
                tensor("w", array![[3.0, 4.0], [5.0, 6.0]], true),
            ],
        }
    }

    #[test]
    fn visits_only_trainable_tensors() {
        let mut seen = Vec::new();
        two_tensors().visit("l2", &mut |n, s, d| seen.push((n, s.to_vec(), d.to_vec())));
        let want = [
            ("l2.shift".to_string(), vec![2, 1], vec![1.0, 2.0]),
            ("l2.w".to_string(), vec![2, 2], vec![3.0, 4.0, 5.0, 6.0]),
        ];
        assert_eq!(seen, want);
        let mut p = two_tensors();
        p.zero();
        assert_eq!(p.tensors[1].value, array![[9.0, 8.0], [7.0, 6.0]]);
        assert_eq!(p.count(), 6);
    }

    #[test]
    fn rows_concatenate_tensors_in_order() {
        let p = two_tensors();
        assert_eq!(p.width(), 5);
        assert_eq!(p.raw_rows(2), array![[1.0, 9.0, 8.0, 3.0, 4.0], [2.0, 7.0, 6.0, 5.0, 6.0]]);
        let mut g = p.zeros_like();
        assert_eq!(g.tensors[1].name, "fixed");
        assert!(!g.tensors[1].trainable);
        g.add_row(1, &[1.0, 2.0, 3.0, 4.0, 5.0]);
        g.add_row(1, &[1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(g.tensors[0].value, array![[0.0], [2.0]]);
        assert_eq!(g.tensors[2].value, array![[0.0, 0.0], [4.0, 5.0]]);
        assert!(ElementParams::<f32>::default().raw_rows(3).dim() == (3, 0));
    }
}
