//! Logits returned by a forward call: one row of `vocab` scores per new position.

/// Row-major logits, shape `[rows, vocab]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    /// `[rows * vocab]`
    data: Vec<f32>,
    rows: usize,
    vocab: usize,
}

impl Logits {
    /// Wraps a `[rows, vocab]` buffer. Panics only on a programming error (length mismatch).
    pub fn new(data: Vec<f32>, rows: usize, vocab: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * vocab,
            "logits buffer is not rows × vocab"
        );
        Self { data, rows, vocab }
    }

    /// Number of positions (rows).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Width of each row (the model's padded vocabulary size).
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Scores of position `i`, shape `[vocab]`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }

    /// Scores of the last position, shape `[vocab]`.
    pub fn last(&self) -> &[f32] {
        self.row(self.rows - 1)
    }

    /// The whole buffer, shape `[rows * vocab]`.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Consumes the logits and returns the buffer.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}
