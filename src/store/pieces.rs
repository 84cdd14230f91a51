//! Snapshots in pieces: a model snapshot (`M`) or a shared contribution
//! (`G`) is stored as records of at most [`PIECE_BYTES`] each, never as one
//! large value (format 7).
//!
//! Why: sled writes a tree node larger than a quarter of a log segment
//! (~128 KiB) to a file of its own in `blobs/`, and a snapshot of a few
//! hundred thousand tokens is megabytes. A rewritten snapshot leaves its
//! old blob file behind until sled retires the log segment of the write
//! that replaced it, which a clean shutdown does not do and a restart
//! forgets: `blobs/` held 4–10 superseded snapshots (15–19 bytes per model
//! token of the 51.9 measured, docs/PERFORMANCE.md, "Storage footprint").
//! In pieces, a node of sled's (at most ~17 records before it splits) stays
//! far below the threshold, so a snapshot lives in the log like every
//! other record and its superseded pieces are reclaimed with the log.
//!
//! Layout: `prefix` · piece number (u32 BE) → a slice of the snapshot's
//! bytes, sealed under its key (`codec::seal`: a piece under the wrong key
//! or damaged is reported, never decoded). Piece 0 starts with the number
//! of pieces (u32 BE), so a missing piece is found too. The bytes are the
//! snapshot as the codec encodes it whole (a format-6 model snapshot keeps
//! its own checksum under `prefix`), so the codec does not know about
//! pieces. A checkpoint writes every piece and removes the ones the new
//! snapshot no longer has, in its one atomic batch.
//!
//! A directory of format 6 or older holds a snapshot as one value under
//! `prefix` itself; it is read as before, and the next checkpoint removes
//! it in the batch that writes the pieces.

use sled::Batch;

use super::Store;
use super::codec;
use super::keys::{piece_key, prefix_end};
use crate::error::Error;

/// Bytes of a snapshot per piece: with the key and checksum, seventeen of
/// them (the most a sled leaf holds before it splits) stay under half of
/// sled's blob threshold (a quarter of its 512 KiB log segment).
pub(super) const PIECE_BYTES: usize = 4096;

/// Bytes of the piece count at the start of piece 0.
const COUNT_BYTES: usize = 4;

fn damaged(what: String) -> Error {
    Error::Corrupt { what }
}

impl Store {
    /// Adds to `batch` the pieces of `bytes` under `prefix`, and the
    /// removal of every other record under `prefix` (the old snapshot's
    /// extra pieces, or its single value from format 6 and older).
    pub(super) fn put_pieces(
        &self,
        batch: &mut Batch,
        prefix: &[u8],
        bytes: &[u8],
    ) -> Result<(), Error> {
        let body = PIECE_BYTES;
        // Piece 0 carries the count, so holds COUNT_BYTES fewer.
        let count = 1 + bytes
            .len()
            .saturating_sub(body - COUNT_BYTES)
            .div_ceil(body);
        let count32 = u32::try_from(count).map_err(|_| {
            damaged(format!(
                "a snapshot of {} bytes is too large to store",
                bytes.len()
            ))
        })?;
        let mut rest = bytes;
        for n in 0..count32 {
            let key = piece_key(prefix, n);
            let mut payload = Vec::with_capacity(body + COUNT_BYTES + 4);
            let take = if n == 0 {
                payload.extend_from_slice(&count32.to_be_bytes());
                (body - COUNT_BYTES).min(rest.len())
            } else {
                body.min(rest.len())
            };
            payload.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            batch.insert(key.clone(), codec::seal(&key, payload));
        }
        debug_assert!(rest.is_empty());
        // Pieces past the new count, from a larger old snapshot.
        for item in self
            .tree()?
            .range(piece_key(prefix, count32)..prefix_end(prefix))
        {
            batch.remove(item?.0);
        }
        // A single-value snapshot of format 6 and older (a no-op in sled
        // when there is none).
        batch.remove(prefix);
        Ok(())
    }

    /// Adds to `batch` the removal of every record under `prefix`.
    pub(super) fn remove_pieces(&self, batch: &mut Batch, prefix: &[u8]) -> Result<(), Error> {
        for item in self.tree()?.scan_prefix(prefix) {
            batch.remove(item?.0);
        }
        Ok(())
    }

    /// The snapshot stored under `prefix`, its pieces joined (or its single
    /// value, written by format 6 and older); `None` if there is none.
    pub(super) fn get_pieces(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let mut records = Vec::new();
        for item in self.tree()?.scan_prefix(prefix) {
            let (key, value) = item?;
            records.push((key, value));
        }
        join(
            prefix,
            records.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
        )
    }
}

/// Joins the records under `prefix`, in key order, into the snapshot's
/// bytes. Every way a set of pieces can be wrong (a piece damaged, under
/// another number, missing, extra, or beside a single-value snapshot) is
/// [`Error::Corrupt`] saying which piece; the caller names the owner.
pub(super) fn join<'a>(
    prefix: &[u8],
    records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Option<Vec<u8>>, Error> {
    let mut out = Vec::new();
    let mut single = false;
    let mut count = None;
    let mut next = 0u32;
    for (key, value) in records {
        let suffix = &key[prefix.len()..];
        if suffix.is_empty() {
            single = true;
            out.extend_from_slice(value);
            continue;
        }
        let n = <[u8; 4]>::try_from(suffix)
            .map(u32::from_be_bytes)
            .map_err(|_| damaged("snapshot piece key".into()))?;
        if single {
            return Err(damaged(format!(
                "snapshot piece {n} beside a single-value snapshot"
            )));
        }
        if n != next {
            return Err(damaged(format!("snapshot piece {next} is missing")));
        }
        let payload = codec::unseal(key, value)
            .ok_or_else(|| damaged(format!("snapshot piece {n}: checksum mismatch")))?;
        let payload = if n == 0 {
            let (head, rest) = payload
                .split_at_checked(COUNT_BYTES)
                .ok_or_else(|| damaged("snapshot piece 0 is cut short".into()))?;
            count = Some(u32::from_be_bytes(head.try_into().expect("4 bytes")));
            rest
        } else {
            payload
        };
        out.extend_from_slice(payload);
        next += 1;
    }
    match count {
        Some(total) if total != next => Err(damaged(format!(
            "snapshot has {next} of its {total} pieces"
        ))),
        _ if !single && next == 0 => Ok(None),
        _ => Ok(Some(out)),
    }
}
