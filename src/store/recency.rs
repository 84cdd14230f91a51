//! The recency section of a model snapshot: the model's learn clock and
//! each token's last-seen stamp, what pruning a model past its quota reads
//! (`classify::prune`). Kept in its own file so the snapshot's main layout
//! (`codec.rs`) stays as it is: the section is appended after the counts.
//!
//! Layout: the clock as a varint, then for each token, in the snapshot's
//! (sorted) token order, its age `clock − seen` as a varint. Ages rather
//! than stamps because most tokens of a long-lived model are old hapaxes of
//! similar age and recent tokens have small ages: measured at about 2
//! bytes per token for a user who learned the whole SpamAssassin corpus
//! (docs/PERFORMANCE.md, "Quota and expiry").
//!
//! The section is what makes a snapshot format 4 (first byte `X`): a
//! format-3 snapshot (`W`, written before it existed) reads as clock 0 with
//! every token seen at 0 — equally old, so the first prune ranks its
//! tokens by evidence alone — and is written as format 4 at its next
//! snapshot. A data-directory format-6 snapshot (`Y`, counts in the user's
//! dictionary order) ends in the same section, its ages for the tokens
//! with counts in dictionary-number order (`codec::encode_snapshot_v6`).

use super::codec::{get_varint, put_varint};
use crate::classify::Counts;
use crate::tokenize::TokenId;

/// Appends `clock` and the ages of tokens last seen at `seen` (in the
/// snapshot's token order; format 6: tokens with counts, in number order).
pub(super) fn put_ages(out: &mut Vec<u8>, clock: u32, seen: impl Iterator<Item = u32>) {
    put_varint(out, u64::from(clock));
    for seen in seen {
        put_varint(out, u64::from(clock.saturating_sub(seen)));
    }
}

/// Reads the section into `tokens`' stamps (in the order they were
/// written) and returns the clock; `None` if it is cut short or malformed.
pub(super) fn get_stamps(input: &mut &[u8], tokens: &mut [(TokenId, Counts, u32)]) -> Option<u32> {
    let clock = u32::try_from(get_varint(input)?).ok()?;
    for (_, _, seen) in tokens.iter_mut() {
        let age = u32::try_from(get_varint(input)?).ok()?;
        *seen = clock.checked_sub(age)?;
    }
    Some(clock)
}
