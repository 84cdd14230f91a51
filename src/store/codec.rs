//! Byte layouts of everything chaff stores. Stable on disk: a change here
//! needs a new `FORMAT_VERSION` in `store/mod.rs`.
//!
//! Token id lists are sorted, then written as LEB128 varints of the gaps
//! between consecutive ids: ~7–8 bytes per id for random 64-bit hashes,
//! instead of 8 fixed bytes plus a key per token.

use crate::classify::{Counts, Model, Weight};
use crate::error::Error;
use crate::policy::{HandlingMode, UserSettings};
use crate::tokenize::TokenId;
use crate::types::Label;

use super::dict::Dict;

/// What the ledger holds for one learned message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub label: Label,
    /// The tokenizer version that produced `tokens`: a model of another
    /// version never counted them, so undoing them there would be wrong.
    pub tokenizer_version: u32,
    /// The message's distinct tokens, sorted: what to unlearn on Forget.
    pub tokens: Vec<TokenId>,
    /// How much the message counted (full, or low for a trusted sender).
    pub weight: Weight,
    /// The consent (or seed) id under which the click also went into the
    /// shared model; 0 when it did not. A click is in the contributor's
    /// shared part only while this id is still the current one: revoking
    /// consent (or clearing the seed) changes the id instead of rewriting
    /// every ledger entry.
    pub shared: u64,
    /// Learned by chaff from delivered mail the user did not click
    /// (`Engine::learn_delivered`), not by a click: a later click on the
    /// same message replaces it as if it had never been learned.
    pub implicit: bool,
}

/// One step of a click, as replayed from the journal.
///
/// Delivered mail has ops of its own ([`Op::LearnDelivered`],
/// [`Op::UnlearnDelivered`]: ham, marked), so the model's split between
/// clicked and delivered ham (`Model::clicked_ham_weight`) is changed by
/// the same op, in the same journal record, as the counts it describes
/// (store format 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Learn(Label, Weight, Vec<TokenId>),
    Unlearn(Label, Weight, Vec<TokenId>),
    /// Ham learned from delivered mail (an implicit ledger entry).
    LearnDelivered(Weight, Vec<TokenId>),
    /// That learning undone (a click over it, a Forget).
    UnlearnDelivered(Weight, Vec<TokenId>),
}

impl Op {
    /// The op that learns what a ledger entry says: marked as delivered
    /// for an implicit (delivered-mail) ham entry.
    pub fn learn_entry(e: LedgerEntry) -> Op {
        if e.implicit && e.label == Label::Ham {
            Op::LearnDelivered(e.weight, e.tokens)
        } else {
            Op::Learn(e.label, e.weight, e.tokens)
        }
    }

    /// The op that takes a ledger entry's learning out again.
    pub fn unlearn_entry(e: LedgerEntry) -> Op {
        if e.implicit && e.label == Label::Ham {
            Op::UnlearnDelivered(e.weight, e.tokens)
        } else {
            Op::Unlearn(e.label, e.weight, e.tokens)
        }
    }

    /// Whether it is exactly [`Op::learn_entry`] of `e` (without a copy of
    /// its ids).
    pub fn learns_entry(&self, e: &LedgerEntry) -> bool {
        let delivered = e.implicit && e.label == Label::Ham;
        let (learn, label, weight, ids) = self.parts();
        learn
            && self.delivered() == delivered
            && label == e.label
            && weight == e.weight
            && ids == e.tokens.as_slice()
    }

    /// Whether it learns (or unlearns), its label, weight and ids: what
    /// changes the counts, for what does not care about the delivered mark
    /// (the shared model: delivered mail is never shared).
    pub fn parts(&self) -> (bool, Label, Weight, &[TokenId]) {
        match self {
            Op::Learn(l, w, ids) => (true, *l, *w, ids),
            Op::Unlearn(l, w, ids) => (false, *l, *w, ids),
            Op::LearnDelivered(w, ids) => (true, Label::Ham, *w, ids),
            Op::UnlearnDelivered(w, ids) => (false, Label::Ham, *w, ids),
        }
    }

    /// Whether it is marked as delivered mail's.
    pub fn delivered(&self) -> bool {
        matches!(self, Op::LearnDelivered(..) | Op::UnlearnDelivered(..))
    }

    /// Its size in journal entries: one per token id, plus one for the op
    /// itself (its label and weight change the model's message counts even
    /// with no ids). What replaying and storing it cost, roughly.
    pub fn entries(&self) -> u64 {
        self.parts().3.len() as u64 + 1
    }

    pub fn apply(&self, model: &mut Model) {
        match self {
            Op::Learn(label, w, ids) => model.learn_weighted(ids, *label, *w),
            Op::Unlearn(label, w, ids) => model.unlearn_weighted(ids, *label, *w),
            Op::LearnDelivered(w, ids) => model.learn_delivered(ids, *w),
            Op::UnlearnDelivered(w, ids) => model.unlearn_delivered(ids, *w),
        }
    }
}

/// Weights other than full are written after a record's fixed fields, so
/// records written before weights existed (format 2) read as full weight.
fn put_weight(out: &mut Vec<u8>, weight: Weight) {
    put_varint(out, u64::from(weight.0));
}

fn get_weight(input: &mut &[u8]) -> Option<Weight> {
    let w = u32::try_from(get_varint(input)?).ok()?;
    (1..=Weight::FULL.0).contains(&w).then_some(Weight(w))
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt {
        what: what.to_string(),
    }
}

/// Appends `v` as an LEB128 varint (7 bits a byte, low bits first).
///
/// Token-id gaps are 8–10 byte varints, and encoding them was 6.5% of the
/// instructions of a corpus replay (callgrind, 2026-11-23) with a loop of
/// one byte per iteration: every click encodes its ids twice (ledger and
/// journal). Here the low 56 bits are spread over 8 bytes at once, the
/// continuation bits set by mask, and 8 bytes appended then cut to the
/// length; a 9th and 10th byte follow for larger values. Same bytes as the
/// byte loop (`put_varint_slow`, pinned by a test).
#[inline]
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    // The 7-bit groups of the low 56 bits, one per byte: halves of 28 bits
    // to 32-bit lanes, quarters of 14 bits to 16-bit lanes, then 7 bits to
    // bytes (three shift-and-mask steps instead of one per byte).
    let mut spread = v & 0x00FF_FFFF_FFFF_FFFF;
    spread = (spread & 0x0000_0000_0FFF_FFFF) | ((spread & 0x00FF_FFFF_F000_0000) << 4);
    spread = (spread & 0x0000_3FFF_0000_3FFF) | ((spread & 0x0FFF_C000_0FFF_C000) << 2);
    spread = (spread & 0x007F_007F_007F_007F) | ((spread & 0x3F80_3F80_3F80_3F80) << 1);
    let high = v >> 56;
    if high == 0 {
        // 1–8 bytes: every byte but the last has its top bit set.
        let len = (64 - (v | 1).leading_zeros() as usize).div_ceil(7);
        let more = 0x8080_8080_8080_8080u64 & ((1u64 << (8 * (len - 1))) - 1);
        let start = out.len();
        out.extend_from_slice(&(spread | more).to_le_bytes());
        out.truncate(start + len);
    } else {
        out.extend_from_slice(&(spread | 0x8080_8080_8080_8080).to_le_bytes());
        if high < 0x80 {
            out.push(high as u8);
        } else {
            out.extend_from_slice(&[(high as u8) | 0x80, 1]);
        }
    }
}

/// The byte loop [`put_varint`] must equal.
#[cfg(test)]
fn put_varint_slow(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one LEB128 varint, advancing `input`.
///
/// Token ids are random 64-bit hashes, so the gaps between a message's
/// sorted ids are 8–9 byte varints; reading them a byte at a time was 44% of
/// loading a model (snapshot + journal replay, `benches/store.rs`). With 9
/// bytes at hand, up to 63 bits are read from two loads without a loop.
#[inline]
pub fn get_varint(input: &mut &[u8]) -> Option<u64> {
    if let Some(head) = input.first_chunk::<9>() {
        let word = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let stops = !word & 0x8080_8080_8080_8080;
        let (len, value) = if stops != 0 {
            let len = (stops.trailing_zeros() / 8 + 1) as usize;
            let keep = if len == 8 {
                u64::MAX
            } else {
                (1u64 << (len * 8)) - 1
            };
            (len, compact_7bit(word & keep))
        } else if head[8] < 0x80 {
            (9, compact_7bit(word) | (u64::from(head[8]) << 56))
        } else {
            return get_varint_slow(input);
        };
        *input = &input[len..];
        return Some(value);
    }
    get_varint_slow(input)
}

/// Packs the low 7 bits of each of `word`'s 8 bytes (little-endian) into 56
/// contiguous bits.
#[inline]
fn compact_7bit(word: u64) -> u64 {
    let x = word & 0x7f7f_7f7f_7f7f_7f7f;
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4)
}

fn get_varint_slow(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        v |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Sorted ids as a count then gap varints.
fn put_ids(out: &mut Vec<u8>, sorted: &[TokenId]) {
    put_varint(out, sorted.len() as u64);
    let mut prev = 0u64;
    for id in sorted {
        put_varint(out, id.0.wrapping_sub(prev));
        prev = id.0;
    }
}

fn get_ids(input: &mut &[u8]) -> Option<Vec<TokenId>> {
    let n = usize::try_from(get_varint(input)?).ok()?;
    // Each id takes at least one byte: a count beyond the input is corrupt
    // (and must not become a huge allocation).
    if n > input.len() {
        return None;
    }
    let mut ids = Vec::with_capacity(n);
    let mut prev = 0u64;
    for _ in 0..n {
        prev = prev.wrapping_add(get_varint(input)?);
        ids.push(TokenId(prev));
    }
    Some(ids)
}

fn get_label(input: &mut &[u8]) -> Option<Label> {
    let (&b, rest) = input.split_first()?;
    *input = rest;
    Label::from_byte(b)
}

pub fn encode_ledger(entry: &LedgerEntry) -> Vec<u8> {
    // Gaps between hashes take 8-9 bytes: size it once, no regrowth.
    let mut out = Vec::with_capacity(24 + entry.tokens.len() * 9);
    out.push(entry.label.to_byte());
    put_varint(&mut out, u64::from(entry.tokenizer_version));
    put_ids(&mut out, &entry.tokens);
    // Trailing fields are optional, so older records read as full weight
    // and not shared: the weight is written when it is not full or when a
    // shared id follows it.
    if entry.weight != Weight::FULL || entry.shared != 0 || entry.implicit {
        put_weight(&mut out, entry.weight);
    }
    if entry.shared != 0 || entry.implicit {
        put_varint(&mut out, entry.shared);
    }
    if entry.implicit {
        out.push(LEDGER_IMPLICIT);
    }
    out
}

pub fn decode_ledger(mut input: &[u8]) -> Result<LedgerEntry, Error> {
    let label = get_label(&mut input).ok_or_else(|| corrupt("ledger label"))?;
    let tokenizer_version = get_varint(&mut input)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| corrupt("ledger tokenizer version"))?;
    let tokens = get_ids(&mut input).ok_or_else(|| corrupt("ledger tokens"))?;
    let weight = if input.is_empty() {
        Weight::FULL
    } else {
        get_weight(&mut input).ok_or_else(|| corrupt("ledger weight"))?
    };
    let shared = if input.is_empty() {
        0
    } else {
        get_varint(&mut input).ok_or_else(|| corrupt("ledger shared id"))?
    };
    let implicit = match input {
        [] => false,
        [LEDGER_IMPLICIT] => true,
        _ => return Err(corrupt("ledger trailing bytes")),
    };
    Ok(LedgerEntry {
        label,
        tokenizer_version,
        tokens,
        weight,
        shared,
        implicit,
    })
}

/// The optional last byte of a ledger entry learned from delivered mail
/// (older entries end before it and read as clicks).
const LEDGER_IMPLICIT: u8 = b'i';

// Full-weight ops keep format 2's kind bytes; the weighted kinds carry a
// weight varint after the label.
const OP_LEARN: u8 = b'+';
const OP_UNLEARN: u8 = b'-';
const OP_LEARN_WEIGHTED: u8 = b'*';
const OP_UNLEARN_WEIGHTED: u8 = b'/';
/// Format 8: the weighted kinds of delivered mail's ham ([`Op::LearnDelivered`],
/// [`Op::UnlearnDelivered`]), in format-6 journal records only; a record
/// of format 6 or 7 has none (read at the format-8 upgrade, which counts
/// all ham as delivered anyway).
const OP_LEARN_DELIVERED: u8 = b'd';
const OP_UNLEARN_DELIVERED: u8 = b'u';

pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let ids: usize = ops.iter().map(|op| op.entries() as usize).sum();
    let mut out = Vec::with_capacity(8 + ids * 9 + ops.len() * 8);
    put_varint(&mut out, ops.len() as u64);
    for op in ops {
        // Formats before 6 have no delivered mark (this writes the shared
        // model's contributions, which delivered mail never enters, and
        // tests' old directories).
        let (learn, label, weight, ids) = op.parts();
        let full = weight == Weight::FULL;
        out.push(match (learn, full) {
            (true, true) => OP_LEARN,
            (false, true) => OP_UNLEARN,
            (true, false) => OP_LEARN_WEIGHTED,
            (false, false) => OP_UNLEARN_WEIGHTED,
        });
        out.push(label.to_byte());
        if !full {
            put_weight(&mut out, weight);
        }
        put_ids(&mut out, ids);
    }
    out
}

pub fn decode_ops(mut input: &[u8]) -> Result<Vec<Op>, Error> {
    let bad = || corrupt("journal entry");
    let n = get_varint(&mut input).ok_or_else(bad)?;
    let mut ops = Vec::new();
    for _ in 0..n {
        let (&kind, rest) = input.split_first().ok_or_else(bad)?;
        input = rest;
        let label = get_label(&mut input).ok_or_else(bad)?;
        let weight = match kind {
            OP_LEARN | OP_UNLEARN => Weight::FULL,
            OP_LEARN_WEIGHTED | OP_UNLEARN_WEIGHTED => get_weight(&mut input).ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        let ids = get_ids(&mut input).ok_or_else(bad)?;
        ops.push(match kind {
            OP_LEARN | OP_LEARN_WEIGHTED => Op::Learn(label, weight, ids),
            _ => Op::Unlearn(label, weight, ids),
        });
    }
    Ok(ops)
}

/// First byte of a format-3 snapshot. Format-2 snapshots began with the
/// tokenizer version as a big-endian u32, so their first byte is 0.
const SNAPSHOT_V3: u8 = b'W';
/// First byte of a format-4 snapshot: format 3 followed by the recency
/// section (`recency.rs`).
const SNAPSHOT_V4: u8 = b'X';
/// First byte of a format-8 snapshot with its ids listed (the shared
/// model's contributions, exports, the Redis store): format 4 with the
/// delivered ham weight after the class weights. Older ones read with
/// all their ham delivered (`Model::set_delivered_ham_weight`).
const SNAPSHOT_V8_IDS: u8 = b'V';

/// A user's model in compact form: header, sorted gap-coded ids, then the
/// spam and ham counts as varints. ~9–10 bytes per token for real models.
pub fn encode_snapshot(model: &Model, applied_seq: u64) -> Vec<u8> {
    encode_snapshot_parts(
        SnapshotHead::of(model),
        applied_seq,
        model.iter_stamped().collect(),
    )
}

/// A snapshot as formats 4 to 7 wrote it (`X`: no delivered ham weight),
/// for tests that build a directory of an older format.
#[cfg(any(test, feature = "fault-injection"))]
pub fn encode_snapshot_format_4(model: &Model, applied_seq: u64) -> Vec<u8> {
    let entries = model.iter_stamped().collect();
    encode_ids_snapshot(SnapshotHead::of(model), applied_seq, entries, false)
}

/// [`encode_snapshot`] from a model's parts (see `store::Snapshot`).
pub fn encode_snapshot_parts(
    head: SnapshotHead,
    applied_seq: u64,
    entries: Vec<(TokenId, Counts, u32)>,
) -> Vec<u8> {
    encode_ids_snapshot(head, applied_seq, entries, true)
}

/// The id-listed snapshot, in format 8 (`split`: with the delivered ham
/// weight) or 4.
fn encode_ids_snapshot(
    head: SnapshotHead,
    applied_seq: u64,
    entries: Vec<(TokenId, Counts, u32)>,
    split: bool,
) -> Vec<u8> {
    let entries = crate::tokenize::sort_by_token_id(entries, |(id, _, _)| *id);
    let mut out = Vec::with_capacity(48 + entries.len() * 12);
    out.push(if split { SNAPSHOT_V8_IDS } else { SNAPSHOT_V4 });
    out.extend_from_slice(&head.tokenizer_version.to_be_bytes());
    out.extend_from_slice(&applied_seq.to_be_bytes());
    for v in [head.spam, head.ham, head.spam_weight, head.ham_weight] {
        put_varint(&mut out, v);
    }
    if split {
        put_varint(&mut out, head.delivered_ham);
    }
    // As `put_ids`, from the entries themselves (no second list of ids).
    put_varint(&mut out, entries.len() as u64);
    let mut prev = 0u64;
    for (id, _, _) in &entries {
        put_varint(&mut out, id.0.wrapping_sub(prev));
        prev = id.0;
    }
    for (_, c, _) in &entries {
        put_varint(&mut out, u64::from(c.spam));
        put_varint(&mut out, u64::from(c.ham));
    }
    super::recency::put_ages(
        &mut out,
        head.clock,
        entries.iter().map(|(_, _, seen)| *seen),
    );
    out
}

/// The model and the last journal sequence number folded into it. Reads
/// format-2 snapshots (counts in messages) by scaling them to full weight.
pub fn decode_snapshot(input: &[u8]) -> Result<(Model, u64), Error> {
    let bad = || corrupt("model snapshot");
    let (v3, stamped, split, input) = match input.split_first() {
        Some((&SNAPSHOT_V8_IDS, rest)) => (true, true, true, rest),
        Some((&SNAPSHOT_V4, rest)) => (true, true, false, rest),
        Some((&SNAPSHOT_V3, rest)) => (true, false, false, rest),
        _ => (false, false, false, input),
    };
    if input.len() < 12 {
        return Err(bad());
    }
    let version = u32::from_be_bytes(input[0..4].try_into().unwrap());
    let applied_seq = u64::from_be_bytes(input[4..12].try_into().unwrap());
    let mut input = &input[12..];
    let spam = get_varint(&mut input).ok_or_else(bad)?;
    let ham = get_varint(&mut input).ok_or_else(bad)?;
    let scale = if v3 { 1 } else { Weight::FULL.0 };
    let weights = if v3 {
        let s = get_varint(&mut input).ok_or_else(bad)?;
        let h = get_varint(&mut input).ok_or_else(bad)?;
        (s, h)
    } else {
        let full = u64::from(Weight::FULL.0);
        (spam.saturating_mul(full), ham.saturating_mul(full))
    };
    // Before format 8 the split was not kept: all the ham is delivered.
    let delivered = if split {
        get_varint(&mut input).ok_or_else(bad)?
    } else {
        weights.1
    };
    let ids = get_ids(&mut input).ok_or_else(bad)?;
    let mut tokens = Vec::with_capacity(ids.len());
    let count = |input: &mut &[u8]| {
        get_varint(input)
            .and_then(|v| u32::try_from(v).ok())
            .map(|v| v.saturating_mul(scale))
            .ok_or_else(bad)
    };
    for id in ids {
        let s = count(&mut input)?;
        let h = count(&mut input)?;
        tokens.push((id, Counts { spam: s, ham: h }, 0));
    }
    let clock = if stamped {
        super::recency::get_stamps(&mut input, &mut tokens).ok_or_else(bad)?
    } else {
        0
    };
    if !input.is_empty() {
        return Err(bad());
    }
    let mut model = Model::from_stamped_parts((spam, ham), weights, version, clock, tokens);
    model.set_delivered_ham_weight(delivered);
    Ok((model, applied_seq))
}

/// Settings: mode byte, the spam and reject thresholds as f64 BE, then the
/// current consent id (u64 BE; 0 = not sharing). Records of format 4 end
/// after the thresholds and read as not sharing.
pub fn encode_settings(s: &UserSettings, consent: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    out.push(s.mode.to_byte());
    out.extend_from_slice(&s.spam_threshold.to_be_bytes());
    out.extend_from_slice(&s.reject_threshold.to_be_bytes());
    out.extend_from_slice(&consent.to_be_bytes());
    out
}

/// The settings and the consent id (see [`encode_settings`]).
pub fn decode_settings(input: &[u8]) -> Result<(UserSettings, u64), Error> {
    let bad = || corrupt("user settings");
    if input.len() != 17 && input.len() != 25 {
        return Err(bad());
    }
    let mode = HandlingMode::from_byte(input[0]).ok_or_else(bad)?;
    let f = |r: std::ops::Range<usize>| f64::from_be_bytes(input[r].try_into().unwrap());
    let consent = match input.get(17..25) {
        Some(b) => u64::from_be_bytes(b.try_into().unwrap()),
        None => 0,
    };
    Ok((
        UserSettings {
            mode,
            spam_threshold: f(1..9),
            reject_threshold: f(9..17),
            share_training: consent != 0,
        },
        consent,
    ))
}

/// Weight units per message in format 3 (format 4 uses [`Weight::FULL`]).
const FORMAT_3_FULL: u32 = 8;

/// Rewrites one format-3 record in format 4: explicit weights and snapshot
/// counts were in eighths of a message and become [`Weight::FULL`] units.
/// Records that carry no explicit weight (full-weight ops and ledger
/// entries, format-2 snapshots) mean the same in both and come back as-is.
pub fn upgrade_format_3(kind: u8, value: &[u8]) -> Result<Vec<u8>, Error> {
    let factor = Weight::FULL.0 / FORMAT_3_FULL;
    let scale = |w: Weight| Weight(w.0 * factor);
    match kind {
        b'L' => {
            let mut e = decode_ledger(value)?;
            if e.weight != Weight::FULL {
                e.weight = scale(e.weight);
            }
            Ok(encode_ledger(&e))
        }
        b'J' => {
            let ops: Vec<Op> = decode_ops(value)?
                .into_iter()
                .map(|op| match op {
                    Op::Learn(l, w, ids) if w != Weight::FULL => Op::Learn(l, scale(w), ids),
                    Op::Unlearn(l, w, ids) if w != Weight::FULL => Op::Unlearn(l, scale(w), ids),
                    op => op,
                })
                .collect();
            Ok(encode_ops(&ops))
        }
        b'M' if matches!(value.first(), Some(&(SNAPSHOT_V3 | SNAPSHOT_V4))) => {
            let (model, seq) = decode_snapshot(value)?;
            let (spam_w, ham_w) = model.weights();
            let f = u64::from(factor);
            let tokens = model.iter_stamped().map(|(id, c, seen)| {
                let up = |v: u32| v.saturating_mul(factor);
                (
                    id,
                    Counts {
                        spam: up(c.spam),
                        ham: up(c.ham),
                    },
                    seen,
                )
            });
            let scaled = Model::from_stamped_parts(
                (model.spam_learned(), model.ham_learned()),
                (spam_w * f, ham_w * f),
                model.tokenizer_version(),
                model.clock(),
                tokens,
            );
            Ok(encode_snapshot(&scaled, seq))
        }
        _ => Ok(value.to_vec()),
    }
}

// ---------------------------------------------------------------------
// Format 6: token ids as numbers in the contributor's dictionary
// (`dict.rs`), and a checksum on every record.
// ---------------------------------------------------------------------

/// A format-6 record's last 4 bytes: CRC-32 (crc32fast) of its key and the
/// bytes before it.
///
/// Why our own, when sled checksums its log: sled's CRC covers each log
/// message (a page fragment) as it is read back from a segment, and its
/// segment headers; it catches a torn or damaged log entry only when sled
/// itself reads that fragment, and answers with `Error::Corruption`
/// pointing at a log offset, not at a record a person can name. A value
/// damaged where sled's checksum does not look (a blob file's contents are
/// checked, but a value rewritten whole by a buggy upgrade, a bit flipped in
/// memory before the write, or a record copied under the wrong key are not)
/// would decode as wrong counts. This CRC binds the value to its key and is
/// checked on every decode, so a damaged record is reported as *that*
/// record (user, message) with what to do, never counted.
const CHECKSUM_BYTES: usize = 4;

fn checksum(key: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(payload);
    h.finalize()
}

/// Appends the checksum of `key` and `payload`.
pub fn seal(key: &[u8], mut payload: Vec<u8>) -> Vec<u8> {
    let sum = checksum(key, &payload);
    payload.extend_from_slice(&sum.to_le_bytes());
    payload
}

/// The payload of a sealed value, if its checksum matches its key.
pub fn unseal<'a>(key: &[u8], value: &'a [u8]) -> Option<&'a [u8]> {
    let cut = value.len().checked_sub(CHECKSUM_BYTES)?;
    let (payload, sum) = value.split_at(cut);
    (checksum(key, payload).to_le_bytes() == sum).then_some(payload)
}

/// First byte of a format-6 ledger entry (the label, in lower case; format
/// 2–5 entries begin with the label in upper case).
const LEDGER_V6_SPAM: u8 = b's';
const LEDGER_V6_HAM: u8 = b'h';
/// First byte of a format-6 ledger entry learned from delivered mail
/// ([`LedgerEntry::implicit`]), by label: in the first byte rather than a
/// trailing one so [`ledger_facts`] sees it without the dictionary.
const LEDGER_V6_SPAM_IMPLICIT: u8 = b'p';
const LEDGER_V6_HAM_IMPLICIT: u8 = b'd';
/// First byte of a format-6 journal record. Older records begin with their
/// op count as a varint; 0xFE would mean at least 254 ops, and a click
/// writes at most three.
const JOURNAL_V6: u8 = 0xFE;
/// First byte of a format-6 snapshot (counts in dictionary order, then the
/// recency section of `recency.rs`). Not `X`: that is snapshot format 4
/// (format 3 plus recency), which format-5 directories hold.
const SNAPSHOT_V6: u8 = b'Y';
/// First byte of a format-8 snapshot: format 6 with the delivered ham
/// weight after the class weights (`Model::clicked_ham_weight`). A
/// format-6 one reads with all its ham delivered.
const SNAPSHOT_V8: u8 = b'Z';

/// Whether a ledger value is format 6 (needs the dictionary to read).
pub fn ledger_is_v6(value: &[u8]) -> bool {
    matches!(
        value.first(),
        Some(&LEDGER_V6_SPAM | &LEDGER_V6_HAM | &LEDGER_V6_SPAM_IMPLICIT | &LEDGER_V6_HAM_IMPLICIT)
    )
}

/// Whether a journal value is format 6.
pub fn ops_are_v6(value: &[u8]) -> bool {
    value.first() == Some(&JOURNAL_V6)
}

/// Whether a snapshot value is format 6.
pub fn snapshot_is_v6(value: &[u8]) -> bool {
    matches!(value.first(), Some(&(SNAPSHOT_V6 | SNAPSHOT_V8)))
}

/// Whether a user's ledger (`L`), journal (`J`) or snapshot (`M`) value is
/// still in a format older than 6 (read side by side with format 6 until
/// the user's next checkpoint or click rewrites it).
pub fn is_older_format(kind: u8, value: &[u8]) -> bool {
    match kind {
        b'L' => !ledger_is_v6(value) && value.first() != Some(&LEDGER_FOLDED),
        b'J' => !ops_are_v6(value) && value.first() != Some(&JOURNAL_V6_POINTER),
        b'M' => !snapshot_is_v6(value),
        _ => false,
    }
}

/// Ids as their sorted dictionary numbers: a count, then gap varints. Every
/// id must be numbered (the store extends the dictionary first).
fn put_numbers(out: &mut Vec<u8>, dict: &Dict, ids: &[TokenId]) {
    let mut numbers: Vec<u32> = ids
        .iter()
        .map(|id| dict.number(*id).expect("ids are numbered before encoding"))
        .collect();
    numbers.sort_unstable();
    put_varint(out, numbers.len() as u64);
    let mut prev = 0u64;
    for n in numbers {
        put_varint(out, u64::from(n) - prev);
        prev = u64::from(n);
    }
}

/// The ids a [`put_numbers`] list names, in number order.
fn get_numbers(input: &mut &[u8], dict: &Dict) -> Option<Vec<TokenId>> {
    let n = usize::try_from(get_varint(input)?).ok()?;
    if n > input.len() {
        return None;
    }
    let mut ids = Vec::with_capacity(n);
    let mut prev = 0u64;
    for _ in 0..n {
        // A 0 gap repeats an id: the engine never writes one, but a list
        // is read back exactly as it was written.
        prev = prev.checked_add(get_varint(input)?)?;
        ids.push(dict.id(prev)?);
    }
    Some(ids)
}

/// First byte of a folded ledger entry: a click older than the undo
/// window, whose tokens are no longer kept (its label and time are, so a
/// Forget can say why it cannot undo it).
const LEDGER_FOLDED: u8 = b'z';

/// What the ledger says of a message, beyond a live entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerFacts {
    /// When the click was made (unix seconds); `None` for entries of
    /// format 5 and older, which did not record it.
    pub time_s: Option<u64>,
    /// The journal sequence number of the click that wrote it (format 6).
    pub seq: Option<u64>,
    /// Whether its tokens were folded away (beyond the undo window).
    pub folded: bool,
    /// Whether it was learned from delivered mail, not a click
    /// ([`LedgerEntry::implicit`]).
    pub implicit: bool,
}

/// A ledger entry in format 6, sealed under its key: label, the click's
/// time (unix seconds) and journal sequence number (see
/// [`encode_learn_pointer`]), then the entry.
pub fn encode_ledger_v6(
    key: &[u8],
    entry: &LedgerEntry,
    seq: u64,
    time_s: u64,
    dict: &Dict,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + entry.tokens.len() * 2);
    out.push(match (entry.label, entry.implicit) {
        (Label::Spam, false) => LEDGER_V6_SPAM,
        (Label::Ham, false) => LEDGER_V6_HAM,
        (Label::Spam, true) => LEDGER_V6_SPAM_IMPLICIT,
        (Label::Ham, true) => LEDGER_V6_HAM_IMPLICIT,
    });
    put_varint(&mut out, time_s);
    put_varint(&mut out, seq);
    put_varint(&mut out, u64::from(entry.tokenizer_version));
    put_numbers(&mut out, dict, &entry.tokens);
    put_weight(&mut out, entry.weight);
    put_varint(&mut out, entry.shared);
    seal(key, out)
}

/// A folded ledger entry: the label and time of a click beyond the undo
/// window, its tokens dropped.
pub fn encode_ledger_folded(key: &[u8], label: Label, time_s: u64) -> Vec<u8> {
    let mut out = vec![LEDGER_FOLDED, label.to_byte()];
    put_varint(&mut out, time_s);
    seal(key, out)
}

/// The label and facts of any ledger value, without the dictionary (checks
/// a format-6 value's checksum).
pub fn ledger_facts(key: &[u8], value: &[u8]) -> Result<(Label, LedgerFacts), Error> {
    let bad = || corrupt("ledger entry");
    match value.first() {
        Some(&LEDGER_FOLDED) => {
            let input =
                unseal(key, value).ok_or_else(|| corrupt("ledger entry: checksum mismatch"))?;
            let mut input = &input[1..];
            let label = get_label(&mut input).ok_or_else(bad)?;
            let time_s = get_varint(&mut input).ok_or_else(bad)?;
            let facts = LedgerFacts {
                time_s: Some(time_s),
                seq: None,
                folded: true,
                implicit: false,
            };
            Ok((label, facts))
        }
        Some(
            &first @ (LEDGER_V6_SPAM
            | LEDGER_V6_HAM
            | LEDGER_V6_SPAM_IMPLICIT
            | LEDGER_V6_HAM_IMPLICIT),
        ) => {
            let input =
                unseal(key, value).ok_or_else(|| corrupt("ledger entry: checksum mismatch"))?;
            let mut input = &input[1..];
            let time_s = get_varint(&mut input).ok_or_else(bad)?;
            let seq = get_varint(&mut input).ok_or_else(bad)?;
            let (label, implicit) = v6_label(first);
            let facts = LedgerFacts {
                time_s: Some(time_s),
                seq: Some(seq),
                folded: false,
                implicit,
            };
            Ok((label, facts))
        }
        _ => {
            let label = Label::from_byte(*value.first().ok_or_else(bad)?).ok_or_else(bad)?;
            let implicit = value.last() == Some(&LEDGER_IMPLICIT)
                && decode_ledger(value).is_ok_and(|e| e.implicit);
            let facts = LedgerFacts {
                time_s: None,
                seq: None,
                folded: false,
                implicit,
            };
            Ok((label, facts))
        }
    }
}

/// The label of a format-6 entry's first byte, and whether it marks an
/// entry learned from delivered mail.
fn v6_label(first: u8) -> (Label, bool) {
    match first {
        LEDGER_V6_SPAM => (Label::Spam, false),
        LEDGER_V6_SPAM_IMPLICIT => (Label::Spam, true),
        LEDGER_V6_HAM_IMPLICIT => (Label::Ham, true),
        _ => (Label::Ham, false),
    }
}

/// Reads a ledger entry of any format; format 6 needs the dictionary.
pub fn decode_ledger_any(
    key: &[u8],
    value: &[u8],
    dict: Option<&Dict>,
) -> Result<LedgerEntry, Error> {
    decode_ledger_seq(key, value, dict).map(|(e, _)| e)
}

/// The sequence number of the click that wrote a format-6 ledger entry
/// (`None` for older formats), without the dictionary. Checks the checksum.
pub fn ledger_seq(key: &[u8], value: &[u8]) -> Result<Option<u64>, Error> {
    ledger_facts(key, value).map(|(_, facts)| facts.seq)
}

/// [`decode_ledger_any`], with the writing click's sequence number (format
/// 6 only).
pub fn decode_ledger_seq(
    key: &[u8],
    value: &[u8],
    dict: Option<&Dict>,
) -> Result<(LedgerEntry, Option<u64>), Error> {
    if !ledger_is_v6(value) {
        return decode_ledger(value).map(|e| (e, None));
    }
    let mut input = unseal(key, value).ok_or_else(|| corrupt("ledger entry: checksum mismatch"))?;
    let dict = dict.ok_or_else(|| corrupt("ledger entry: no dictionary"))?;
    let (label, implicit) = match input.split_first() {
        Some((&first, rest)) => {
            input = rest;
            v6_label(first)
        }
        None => return Err(corrupt("ledger label")),
    };
    let _time_s = get_varint(&mut input).ok_or_else(|| corrupt("ledger time"))?;
    let seq = get_varint(&mut input).ok_or_else(|| corrupt("ledger sequence number"))?;
    let tokenizer_version = get_varint(&mut input)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| corrupt("ledger tokenizer version"))?;
    let tokens = get_numbers(&mut input, dict)
        .ok_or_else(|| corrupt("ledger tokens (a number outside the user's dictionary)"))?;
    let weight = get_weight(&mut input).ok_or_else(|| corrupt("ledger weight"))?;
    let shared = get_varint(&mut input).ok_or_else(|| corrupt("ledger shared id"))?;
    if !input.is_empty() {
        return Err(corrupt("ledger trailing bytes"));
    }
    let entry = LedgerEntry {
        label,
        tokenizer_version,
        // Sorted by id, as the entry was written (and as format 5 read).
        tokens: crate::tokenize::sort_by_token_id(tokens, |id| *id),
        weight,
        shared,
        implicit,
    };
    Ok((entry, Some(seq)))
}

/// First byte of a format-6 journal record that says "learn what the
/// ledger entry of message M says" instead of listing the ids again.
const JOURNAL_V6_POINTER: u8 = 0xFD;

/// A journal record for the commonest click, a first learn: the message's
/// ledger entry written in the same batch already lists its tokens, so the
/// record names the message (a few dozen bytes instead of ~1.3 per token).
/// The ledger entry carries this record's sequence number; a later click
/// that changes or removes that entry while this record is still in the
/// journal rewrites it with explicit ops first (`Store::record_click`), so
/// a replay always finds the entry this click wrote.
pub fn encode_learn_pointer(key: &[u8], message_id: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + message_id.len() + CHECKSUM_BYTES);
    out.push(JOURNAL_V6_POINTER);
    out.extend_from_slice(message_id);
    seal(key, out)
}

/// The message id a pointer record names, or `None` for other records.
pub fn learn_pointer<'a>(key: &[u8], value: &'a [u8]) -> Result<Option<&'a [u8]>, Error> {
    if value.first() != Some(&JOURNAL_V6_POINTER) {
        return Ok(None);
    }
    let input = unseal(key, value).ok_or_else(|| corrupt("journal record: checksum mismatch"))?;
    Ok(Some(&input[1..]))
}

/// Journal ops in format 6, sealed under their key.
pub fn encode_ops_v6(key: &[u8], ops: &[Op], dict: &Dict) -> Vec<u8> {
    let ids: usize = ops.iter().map(|op| op.entries() as usize).sum();
    let mut out = Vec::with_capacity(16 + ids * 2 + ops.len() * 4);
    out.push(JOURNAL_V6);
    put_varint(&mut out, ops.len() as u64);
    for op in ops {
        let (learn, label, weight, ids) = op.parts();
        out.push(match (learn, op.delivered()) {
            (true, false) => OP_LEARN_WEIGHTED,
            (false, false) => OP_UNLEARN_WEIGHTED,
            (true, true) => OP_LEARN_DELIVERED,
            (false, true) => OP_UNLEARN_DELIVERED,
        });
        out.push(label.to_byte());
        put_weight(&mut out, weight);
        put_numbers(&mut out, dict, ids);
    }
    seal(key, out)
}

/// Reads journal ops of any format; format 6 needs the dictionary.
pub fn decode_ops_any(key: &[u8], value: &[u8], dict: Option<&Dict>) -> Result<Vec<Op>, Error> {
    if value.first() == Some(&JOURNAL_V6_POINTER) {
        // Read through `Store::journal_ops`, which follows the pointer.
        return Err(corrupt("journal pointer record read as ops"));
    }
    if !ops_are_v6(value) {
        return decode_ops(value);
    }
    let bad = || corrupt("journal record");
    let input = unseal(key, value).ok_or_else(|| corrupt("journal record: checksum mismatch"))?;
    let dict = dict.ok_or_else(bad)?;
    let mut input = &input[1..];
    let n = get_varint(&mut input).ok_or_else(bad)?;
    let mut ops = Vec::new();
    for _ in 0..n {
        let (&kind, rest) = input.split_first().ok_or_else(bad)?;
        input = rest;
        let label = get_label(&mut input).ok_or_else(bad)?;
        let weight = get_weight(&mut input).ok_or_else(bad)?;
        let ids = get_numbers(&mut input, dict).ok_or_else(bad)?;
        ops.push(match (kind, label) {
            (OP_LEARN_WEIGHTED, _) => Op::Learn(label, weight, ids),
            (OP_UNLEARN_WEIGHTED, _) => Op::Unlearn(label, weight, ids),
            (OP_LEARN_DELIVERED, Label::Ham) => Op::LearnDelivered(weight, ids),
            (OP_UNLEARN_DELIVERED, Label::Ham) => Op::UnlearnDelivered(weight, ids),
            _ => return Err(bad()),
        });
    }
    if !input.is_empty() {
        return Err(bad());
    }
    Ok(ops)
}

/// The fixed part of a snapshot: what a model counts besides its tokens.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotHead {
    pub tokenizer_version: u32,
    /// The model's learn clock (`recency.rs`).
    pub clock: u32,
    pub spam: u64,
    pub ham: u64,
    pub spam_weight: u64,
    pub ham_weight: u64,
    /// The part of `ham_weight` learned from delivered mail (format 8).
    pub delivered_ham: u64,
}

impl SnapshotHead {
    pub fn of(model: &Model) -> Self {
        let (spam_weight, ham_weight) = model.weights();
        Self {
            tokenizer_version: model.tokenizer_version(),
            clock: model.clock(),
            spam: model.spam_learned(),
            ham: model.ham_learned(),
            spam_weight,
            ham_weight,
            delivered_ham: model.delivered_ham_weight(),
        }
    }
}

/// A snapshot in format 6, sealed under its key: the head, then one
/// (spam, ham) count pair per dictionary number up to the highest one the
/// model uses (tokens the model no longer has count 0, 2 bytes), then the
/// recency section (`recency.rs`): the clock and the age of each token the
/// model has (non-zero counts), in number order. Every token must be
/// numbered.
pub fn encode_snapshot_v6(
    key: &[u8],
    head: SnapshotHead,
    applied_seq: u64,
    tokens: &[(TokenId, Counts, u32)],
    dict: &Dict,
) -> Vec<u8> {
    let mut counts = vec![(Counts::default(), 0u32); dict.len()];
    let mut used = 0usize;
    for (id, c, seen) in tokens {
        let n = dict.number(*id).expect("model tokens are numbered") as usize;
        counts[n] = (*c, *seen);
        used = used.max(n + 1);
    }
    counts.truncate(used);
    let mut out = Vec::with_capacity(48 + counts.len() * 3);
    out.push(SNAPSHOT_V8);
    out.extend_from_slice(&head.tokenizer_version.to_be_bytes());
    out.extend_from_slice(&applied_seq.to_be_bytes());
    for v in [
        head.spam,
        head.ham,
        head.spam_weight,
        head.ham_weight,
        head.delivered_ham,
    ] {
        put_varint(&mut out, v);
    }
    put_varint(&mut out, counts.len() as u64);
    for (c, _) in &counts {
        put_varint(&mut out, u64::from(c.spam));
        put_varint(&mut out, u64::from(c.ham));
    }
    let live = counts.iter().filter(|(c, _)| c.spam != 0 || c.ham != 0);
    super::recency::put_ages(&mut out, head.clock, live.map(|(_, seen)| *seen));
    seal(key, out)
}

/// The last journal sequence number folded into a snapshot of any format,
/// without decoding it (nor checking a format-6 checksum).
pub fn decode_snapshot_seq(value: &[u8]) -> Result<u64, Error> {
    let start = match value.first() {
        Some(&(SNAPSHOT_V3 | SNAPSHOT_V4 | SNAPSHOT_V6 | SNAPSHOT_V8 | SNAPSHOT_V8_IDS)) => 5,
        _ => 4,
    };
    value
        .get(start..start + 8)
        .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
        .ok_or_else(|| corrupt("model snapshot"))
}

/// Reads a snapshot of any format; format 6 needs the dictionary.
pub fn decode_snapshot_any(
    key: &[u8],
    value: &[u8],
    dict: Option<&Dict>,
) -> Result<(Model, u64), Error> {
    if !snapshot_is_v6(value) {
        return decode_snapshot(value);
    }
    let bad = || corrupt("model snapshot");
    let input = unseal(key, value).ok_or_else(|| corrupt("model snapshot: checksum mismatch"))?;
    let dict = dict.ok_or_else(bad)?;
    let split = input.first() == Some(&SNAPSHOT_V8);
    let input = &input[1..];
    if input.len() < 12 {
        return Err(bad());
    }
    let version = u32::from_be_bytes(input[0..4].try_into().unwrap());
    let applied_seq = u64::from_be_bytes(input[4..12].try_into().unwrap());
    let mut input = &input[12..];
    let mut head = [0u64; 5];
    // Format 6 and 7 did not keep the split: all the ham is delivered.
    let fields = if split { 5 } else { 4 };
    for v in &mut head[..fields] {
        *v = get_varint(&mut input).ok_or_else(bad)?;
    }
    if !split {
        head[4] = head[3];
    }
    let n = get_varint(&mut input).ok_or_else(bad)?;
    if n > dict.len() as u64 || n > input.len() as u64 {
        return Err(corrupt(
            "model snapshot (counts beyond the user's dictionary)",
        ));
    }
    let count = |input: &mut &[u8]| {
        get_varint(input)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(bad)
    };
    let mut tokens = Vec::new();
    for id in &dict.ids()[..n as usize] {
        let spam = count(&mut input)?;
        let ham = count(&mut input)?;
        if spam != 0 || ham != 0 {
            tokens.push((*id, Counts { spam, ham }, 0));
        }
    }
    let clock = super::recency::get_stamps(&mut input, &mut tokens).ok_or_else(bad)?;
    if !input.is_empty() {
        return Err(bad());
    }
    let mut model = Model::from_stamped_parts(
        (head[0], head[1]),
        (head[2], head[3]),
        version,
        clock,
        tokens,
    );
    model.set_delivered_ham_weight(head[4]);
    Ok((model, applied_seq))
}

/// A dictionary record: the ids, 8 bytes each (little-endian), sealed
/// under its key (`K` · contributor · first number).
pub fn encode_dict(key: &[u8], ids: &[TokenId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 8 + CHECKSUM_BYTES);
    for id in ids {
        out.extend_from_slice(&id.0.to_le_bytes());
    }
    seal(key, out)
}

/// The ids of a dictionary record.
pub fn decode_dict(key: &[u8], value: &[u8]) -> Result<Vec<TokenId>, Error> {
    let input =
        unseal(key, value).ok_or_else(|| corrupt("dictionary record: checksum mismatch"))?;
    if input.len() % 8 != 0 {
        return Err(corrupt("dictionary record length"));
    }
    Ok(input
        .chunks_exact(8)
        .map(|c| TokenId(u64::from_le_bytes(c.try_into().unwrap())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_edges() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut s = &out[..];
            assert_eq!(get_varint(&mut s), Some(v));
            assert!(s.is_empty());
        }
        assert_eq!(get_varint(&mut &[0x80u8][..]), None);
        // The bytes themselves are the on-disk format.
        let bytes = |v| {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            out
        };
        assert_eq!(bytes(0), [0x00]);
        assert_eq!(bytes(300), [0xAC, 0x02]);
        assert_eq!(
            bytes(u64::MAX),
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
        );
    }

    #[test]
    fn fast_varint_writes_what_the_byte_loop_writes() {
        let mut values = vec![0u64, u64::MAX];
        // Both sides of every length boundary, and of every bit.
        for bit in 0..64 {
            let p = 1u64 << bit;
            values.extend([p - 1, p, p + 1, p | (p - 1)]);
        }
        let mut r = 0x2545_F491_4F6C_DD1Du64;
        for shift in 0..64 {
            for _ in 0..8 {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                values.push(r >> shift);
            }
        }
        for v in values {
            let (mut fast, mut slow) = (vec![0xAA], vec![0xAA]);
            put_varint(&mut fast, v);
            put_varint_slow(&mut slow, v);
            assert_eq!(fast, slow, "{v:#x}");
        }
    }

    #[test]
    fn fast_varint_reads_what_the_byte_loop_reads() {
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        let mut values = vec![0, 1, 127, 128, (1 << 56) - 1, 1 << 56, (1 << 63) - 1];
        values.extend([1u64 << 63, u64::MAX]);
        for shift in 0..64 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            values.push(r >> shift);
        }
        let mut out = Vec::new();
        for v in &values {
            put_varint(&mut out, *v);
        }
        // Every suffix, so values are read both with and without 9 bytes
        // of lookahead, and truncated ones fail alike.
        let (mut fast, mut slow) = (&out[..], &out[..]);
        for v in &values {
            assert_eq!(get_varint(&mut fast), Some(*v));
            assert_eq!(get_varint_slow(&mut slow), Some(*v));
            assert_eq!(fast.len(), slow.len());
        }
        for cut in 0..out.len() {
            let (mut a, mut b) = (&out[cut..], &out[cut..]);
            loop {
                let (x, y) = (get_varint(&mut a), get_varint_slow(&mut b));
                assert_eq!((x, a.len()), (y, b.len()), "cut {cut}");
                if x.is_none() {
                    break;
                }
            }
        }
        // An overlong encoding (10+ bytes with continuation) is refused.
        assert_eq!(get_varint(&mut &[0xFFu8; 12][..]), None);
    }

    #[test]
    fn ledger_round_trips() {
        let e = LedgerEntry {
            label: Label::Spam,
            tokenizer_version: 2,
            tokens: vec![TokenId(3), TokenId(99), TokenId(u64::MAX)],
            weight: Weight::FULL,
            shared: 0,
            implicit: false,
        };
        assert_eq!(decode_ledger(&encode_ledger(&e)).unwrap(), e);
        let low = LedgerEntry {
            weight: Weight::LOW,
            ..e.clone()
        };
        assert_eq!(decode_ledger(&encode_ledger(&low)).unwrap(), low);
        for weight in [Weight::FULL, Weight::LOW] {
            let shared = LedgerEntry {
                weight,
                shared: 1 << 40,
                ..e.clone()
            };
            assert_eq!(decode_ledger(&encode_ledger(&shared)).unwrap(), shared);
            let implicit = LedgerEntry {
                weight,
                implicit: true,
                ..e.clone()
            };
            assert_eq!(decode_ledger(&encode_ledger(&implicit)).unwrap(), implicit);
        }
        // A record written before sharing existed is not shared.
        assert_eq!(encode_ledger(&e), {
            let mut old = vec![e.label.to_byte()];
            put_varint(&mut old, 2);
            put_ids(&mut old, &e.tokens);
            old
        });
    }

    #[test]
    fn format_2_snapshot_reads_as_full_weight() {
        // Format 2: tokenizer version, sequence, message counts, ids, counts.
        let mut v2 = Vec::new();
        v2.extend_from_slice(&2u32.to_be_bytes());
        v2.extend_from_slice(&7u64.to_be_bytes());
        put_varint(&mut v2, 1);
        put_varint(&mut v2, 0);
        put_ids(&mut v2, &[TokenId(5)]);
        put_varint(&mut v2, 1);
        put_varint(&mut v2, 0);
        let (model, seq) = decode_snapshot(&v2).unwrap();
        let mut expect = Model::default();
        expect.learn(&[TokenId(5)], Label::Spam);
        assert_eq!((model, seq), (expect, 7));
    }

    #[test]
    fn format_3_records_upgrade_to_the_same_model_in_format_4_units() {
        // Format 3: a message is 8 units; a trusted-sender click was 1.
        let ids = vec![TokenId(4), TokenId(9)];
        let led3 = {
            let mut v = encode_ledger(&LedgerEntry {
                label: Label::Spam,
                tokenizer_version: 2,
                tokens: ids.clone(),
                weight: Weight::FULL,
                shared: 0,
                implicit: false,
            });
            put_varint(&mut v, 1);
            v
        };
        let led4 = decode_ledger(&upgrade_format_3(b'L', &led3).unwrap()).unwrap();
        assert_eq!(led4.weight, Weight(Weight::FULL.0 / 8));
        let full = encode_ledger(&LedgerEntry {
            weight: Weight::FULL,
            ..led4.clone()
        });
        assert_eq!(upgrade_format_3(b'L', &full).unwrap(), full);

        let mut ops3 = Vec::new();
        put_varint(&mut ops3, 2);
        ops3.extend_from_slice(&[OP_LEARN_WEIGHTED, Label::Spam.to_byte()]);
        put_varint(&mut ops3, 1);
        put_ids(&mut ops3, &ids);
        ops3.extend_from_slice(&[OP_LEARN, Label::Ham.to_byte()]);
        put_ids(&mut ops3, &ids);
        let ops4 = decode_ops(&upgrade_format_3(b'J', &ops3).unwrap()).unwrap();
        let eighth = Weight(Weight::FULL.0 / 8);
        assert_eq!(
            ops4,
            vec![
                Op::Learn(Label::Spam, eighth, ids.clone()),
                Op::Learn(Label::Ham, Weight::FULL, ids.clone()),
            ]
        );

        // The format-3 snapshot of that model: counts and weights in eighths.
        let mut snap3 = vec![SNAPSHOT_V3];
        snap3.extend_from_slice(&2u32.to_be_bytes());
        snap3.extend_from_slice(&5u64.to_be_bytes());
        for v in [1, 1, 1, 8] {
            put_varint(&mut snap3, v);
        }
        put_ids(&mut snap3, &ids);
        for _ in &ids {
            put_varint(&mut snap3, 1);
            put_varint(&mut snap3, 8);
        }
        let (model, seq) = decode_snapshot(&upgrade_format_3(b'M', &snap3).unwrap()).unwrap();
        let mut expect = Model::default();
        for op in &ops4 {
            op.apply(&mut expect);
        }
        assert_eq!((model, seq), (expect, 5));
    }

    #[test]
    fn ops_round_trip() {
        let ops = vec![
            Op::Unlearn(Label::Ham, Weight::FULL, vec![TokenId(1)]),
            Op::Learn(Label::Spam, Weight::FULL, vec![TokenId(1), TokenId(7)]),
            Op::Learn(Label::Spam, Weight::LOW, vec![TokenId(9)]),
            Op::Unlearn(Label::Spam, Weight::LOW, vec![TokenId(9)]),
        ];
        assert_eq!(decode_ops(&encode_ops(&ops)).unwrap(), ops);
    }

    #[test]
    fn delivered_ops_and_the_split_round_trip_and_older_snapshots_read_all_delivered() {
        use crate::store::dict::Dict;
        let mut dict = Dict::default();
        dict.extend([TokenId(1), TokenId(7)]).unwrap();
        let ops = vec![
            Op::LearnDelivered(Weight(3), vec![TokenId(1)]),
            Op::UnlearnDelivered(Weight(3), vec![TokenId(1)]),
            Op::Learn(Label::Ham, Weight(3), vec![TokenId(7)]),
        ];
        let v = encode_ops_v6(b"k", &ops, &dict);
        assert_eq!(decode_ops_any(b"k", &v, Some(&dict)).unwrap(), ops);
        let mut m = Model::default();
        m.learn(&[TokenId(1)], Label::Spam);
        m.learn(&[TokenId(7)], Label::Ham);
        m.learn_delivered(&[TokenId(1)], Weight(5));
        assert_eq!((m.delivered_ham_weight(), m.clicked_ham_weight()), (5, 64));
        let head = SnapshotHead::of(&m);
        let tokens: Vec<_> = m.iter_stamped().collect();
        for (bytes, dict) in [
            (encode_snapshot(&m, 1), None),
            (
                encode_snapshot_v6(b"k", head, 1, &tokens, &dict),
                Some(&dict),
            ),
        ] {
            let (back, _) = decode_snapshot_any(b"k", &bytes, dict).unwrap();
            assert_eq!(back.delivered_ham_weight(), 5);
            assert_eq!(back.clicked_ham_weight(), 64);
        }
        // Format 4 to 7 kept no split: all the ham reads as delivered.
        let (old, _) = decode_snapshot(&encode_snapshot_format_4(&m, 1)).unwrap();
        assert_eq!(
            (old.delivered_ham_weight(), old.clicked_ham_weight()),
            (69, 0)
        );
    }

    #[test]
    fn snapshot_round_trips() {
        let mut m = Model::default();
        m.learn(&[TokenId(5), TokenId(1 << 60)], Label::Spam);
        m.learn(&[TokenId(5)], Label::Ham);
        m.learn_weighted(&[TokenId(6)], Label::Spam, Weight::LOW);
        let (back, seq) = decode_snapshot(&encode_snapshot(&m, 42)).unwrap();
        assert_eq!(back.clock(), m.clock());
        for (id, _, seen) in m.iter_stamped() {
            assert_eq!(back.seen(id), Some(seen), "{id:?}");
        }
        assert_eq!((back, seq), (m, 42));
    }

    #[test]
    fn truncated_records_are_corrupt_not_panics() {
        let mut m = Model::default();
        m.learn(&[TokenId(5), TokenId(77)], Label::Spam);
        let snap = encode_snapshot(&m, 1);
        for cut in 0..snap.len() {
            assert!(decode_snapshot(&snap[..cut]).is_err(), "cut at {cut}");
        }
        let led = encode_ledger(&LedgerEntry {
            label: Label::Ham,
            tokenizer_version: 2,
            tokens: vec![TokenId(1), TokenId(2)],
            weight: Weight::FULL,
            // (Optional trailing fields cannot be told from a cut: only the
            // fixed part is checked here.)
            shared: 0,
            implicit: false,
        });
        for cut in 0..led.len() {
            assert!(decode_ledger(&led[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn settings_round_trip_and_format_4_records_do_not_share() {
        let s = UserSettings {
            share_training: true,
            ..UserSettings::default()
        };
        assert_eq!(decode_settings(&encode_settings(&s, 42)).unwrap(), (s, 42));
        let v4 = &encode_settings(&UserSettings::default(), 0)[..17];
        assert_eq!(decode_settings(v4).unwrap(), (UserSettings::default(), 0));
    }

    #[test]
    fn huge_declared_count_is_rejected_without_allocating() {
        let mut bytes = vec![b'S'];
        put_varint(&mut bytes, u64::MAX);
        assert!(decode_ledger(&bytes).is_err());
    }
}
