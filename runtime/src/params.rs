//! Parameter containers. Every layer's parameters (and its gradient, which has the same type)
//! implement [`Params`], which visits the tensors in a fixed order. That order is the order of
//! the flat parameter vector ([`crate::Flow::params`]) and of the safetensors file.

use crate::real::Real;
use ndarray::Array1;

/// A set of named tensors, visited in a fixed order.
pub trait Params<T: Real> {
    /// Calls `f(name, shape, data)` for every tensor, names prefixed by `prefix` and a dot.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &[T]));
    /// The same as [`Params::visit`], with mutable data.
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &mut [T]));
    /// Sets every value to zero (used to reset gradient accumulators).
    fn zero(&mut self) {
        self.visit_mut("", &mut |_, _, d| d.iter_mut().for_each(|v| *v = T::zero()));
    }
    /// The number of scalars.
    fn count(&self) -> usize {
        let mut n = 0;
        self.visit("", &mut |_, _, d| n += d.len());
        n
    }
}

/// One named vector of per-dimension parameters (actnorm's shift, a rescaling's log-scale).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamVec<T> {
    pub name: &'static str,
    pub value: Array1<T>,
}

impl<T: Real> ParamVec<T> {
    pub fn zeros(name: &'static str, n: usize) -> Self {
        Self { name, value: Array1::zeros(n) }
    }
}

impl<T: Real> Params<T> for ParamVec<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &[T])) {
        let data = self.value.as_slice().expect("ParamVec is contiguous");
        f(join(prefix, self.name), &[self.value.len()], data);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        let n = self.value.len();
        let data = self.value.as_slice_mut().expect("ParamVec is contiguous");
        f(join(prefix, self.name), &[n], data);
    }
}

/// `prefix.name`, or `name` when the prefix is empty.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
