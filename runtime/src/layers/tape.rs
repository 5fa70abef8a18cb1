//! The activations a backward pass reuses from its own forward pass.
//!
//! A layer's backward kernel needs what its forward kernel computed: a coupling's conditioner
//! input and every MLP activation, a MADE's masked weights and activations. Recomputing them
//! costs a third of a training step's matrix products; keeping them in the layer's ordinary
//! scratch is unsafe, because any call between the forward and the backward pass (a
//! `log_prob` on the same thread) may overwrite that scratch.
//!
//! A [`Tape`] is a scratch that only a backward pass touches. Its forward step writes it
//! through [`Tape::record`]; its backward step reads it through [`Tape::replay`], which
//! panics unless a forward step recorded it since the last replay, with the same row count.
//! So a backward kernel can never read another call's activations, nor the same ones twice.
//!
//! ```text
//! __rt::layers::affine_coupling_inverse(&self.layer3, .., __tapes.layer3.record(__n));
//! ...                                    // later layers, the base
//! __rt::layers::affine_coupling_backward(&self.layer3, .., &mut __tapes.layer3);
//! ```

/// A scratch `S` written by one forward step and read once by its backward step.
#[derive(Clone, Debug, Default)]
pub struct Tape<S> {
    s: S,
    /// The rows of the forward step recorded and not yet replayed.
    recorded: Option<usize>,
}

impl<S> Tape<S> {
    /// The scratch for the forward step of `rows` rows, whose buffers the backward step of
    /// the same pass will read.
    pub fn record(&mut self, rows: usize) -> &mut S {
        self.recorded = Some(rows);
        &mut self.s
    }

    /// The scratch as the forward step of `rows` rows left it. Panics if no forward step was
    /// recorded since the last replay, or one of another row count: a backward kernel must
    /// not read activations that are not its own pass's.
    pub fn replay(&mut self, rows: usize) -> &mut S {
        match self.recorded.take() {
            Some(r) if r == rows => &mut self.s,
            Some(r) => panic!("Tape::replay: recorded {r} rows, replayed with {rows}"),
            None => panic!("Tape::replay: no forward step recorded since the last replay"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tape;

    #[test]
    fn replay_reads_what_record_wrote_once() {
        let mut t = Tape::<Vec<u8>>::default();
        t.record(3).push(7);
        assert_eq!(t.replay(3), &vec![7]);
        let second = std::panic::catch_unwind(move || t.replay(3).len());
        assert!(second.is_err(), "a second replay must panic");
    }

    #[test]
    #[should_panic(expected = "recorded 4 rows, replayed with 5")]
    fn replay_of_another_row_count_panics() {
        let mut t = Tape::<Vec<u8>>::default();
        t.record(4);
        t.replay(5);
    }

    #[test]
    #[should_panic(expected = "no forward step recorded")]
    fn replay_without_record_panics() {
        Tape::<Vec<u8>>::default().replay(1);
    }
}
