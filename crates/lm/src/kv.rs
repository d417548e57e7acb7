//! [`KvCursor`]: how many positions a model's KV cache holds and may hold, and the checks
//! that every `forward` / `truncate` of an [`Lm`](crate::Lm) makes before touching it.

use anyhow::{bail, Result};

/// The valid length and the capacity of a KV cache (the cache's storage lives with the
/// model; this is the bookkeeping, shared by every model so they agree on the contract).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvCursor {
    /// Positions `0..len` hold valid entries.
    len: usize,
    /// Positions the storage holds.
    capacity: usize,
    /// The model's `max_position_embeddings` (named in errors).
    max_positions: usize,
}

impl KvCursor {
    /// The context length a cache gets when none is asked for: the model's
    /// `max_position_embeddings`, but at most this many positions (Pythia's 2048 is below
    /// it). A config may claim a huge number of positions; a cache sized from that would ask
    /// for more memory than any machine has, so a longer context must be asked for.
    pub const DEFAULT_CONTEXT_CAP: usize = 4096;

    /// An empty cache of `capacity` positions (default: `max_positions`, at most
    /// [`DEFAULT_CONTEXT_CAP`](Self::DEFAULT_CONTEXT_CAP)); the capacity must be between 1 and `max_positions`.
    pub fn new(capacity: Option<usize>, max_positions: usize) -> Result<Self> {
        let capacity = capacity.unwrap_or(max_positions.min(Self::DEFAULT_CONTEXT_CAP));
        if capacity == 0 || capacity > max_positions {
            bail!(
                "context length {capacity} must be between 1 and the model's max positions \
                 {max_positions}"
            );
        }
        Ok(KvCursor {
            len: 0,
            capacity,
            max_positions,
        })
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Checks an append of `tokens` to a model with `vocab` token ids: at least one token,
    /// every id below `vocab`, and room for all of them. Returns the first new position.
    pub fn check_append(&self, tokens: &[u32], vocab: usize) -> Result<usize> {
        let (start, n) = (self.len, tokens.len());
        if n == 0 {
            bail!("forward needs at least one token");
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            bail!("token id {bad} is out of range: the model's vocabulary has {vocab} ids");
        }
        if start + n > self.capacity {
            bail!(
                "context too long: {start} cached + {n} new tokens exceed the context length \
                 {} (model max positions {})",
                self.capacity,
                self.max_positions
            );
        }
        Ok(start)
    }

    /// Records `n` appended positions (after a checked, successful append).
    ///
    /// Panics if that would pass the capacity: [`check_append`](Self::check_append) rules
    /// that out, so it is a programming error.
    pub fn advance(&mut self, n: usize) {
        assert!(
            self.len + n <= self.capacity,
            "KV cursor advanced past its capacity"
        );
        self.len += n;
    }

    /// Keeps the first `len` cached positions (`len <= self.len()`).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            bail!(
                "cannot truncate the cache to {len} tokens: it holds only {}",
                self.len
            );
        }
        self.len = len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_must_fit_the_model() {
        assert_eq!(KvCursor::new(None, 64).unwrap().capacity(), 64);
        assert_eq!(KvCursor::new(Some(8), 64).unwrap().capacity(), 8);
        // A huge max_position_embeddings gets the capped default unless more is asked for.
        let huge = 1_000_000_000_000;
        assert_eq!(
            KvCursor::new(None, huge).unwrap().capacity(),
            KvCursor::DEFAULT_CONTEXT_CAP
        );
        assert_eq!(KvCursor::new(None, 2048).unwrap().capacity(), 2048);
        assert_eq!(
            KvCursor::new(Some(10_000), huge).unwrap().capacity(),
            10_000
        );
        for bad in [0, 65] {
            let err = KvCursor::new(Some(bad), 64).unwrap_err().to_string();
            assert!(
                err.contains("between 1 and the model's max positions 64"),
                "{err}"
            );
        }
    }

    #[test]
    fn appends_are_checked_and_rollbacks_go_only_backwards() {
        let mut kv = KvCursor::new(Some(4), 64).unwrap();
        assert!(kv.check_append(&[], 10).is_err());
        let err = kv.check_append(&[3, 10], 10).unwrap_err().to_string();
        assert!(err.contains("token id 10 is out of range"), "{err}");
        assert_eq!(kv.check_append(&[1, 2, 3], 10).unwrap(), 0);
        kv.advance(3);
        assert_eq!((kv.len(), kv.is_empty()), (3, false));
        let err = kv.check_append(&[1, 2], 10).unwrap_err().to_string();
        assert!(
            err.contains("context too long: 3 cached + 2 new tokens"),
            "{err}"
        );
        assert_eq!(kv.check_append(&[1], 10).unwrap(), 3);
        assert!(kv.truncate(4).is_err());
        kv.truncate(1).unwrap();
        assert_eq!(kv.len(), 1);
        kv.truncate(0).unwrap();
        assert!(kv.is_empty());
    }
}
