//! The undo window on the cluster (`--undo-window`,
//! `--delivered-undo-window`), with the sled store's meaning
//! (`store::ledger`): a click younger than the window is undone exactly
//! (Forget, relearn); an older one keeps its counts and answers
//! [`Error::BeyondUndoWindow`] (FAILED_PRECONDITION naming the window);
//! delivered mail's entry past its own, shorter window is dropped, its
//! counts kept, and a later click on that mail is a first click.
//!
//! # Why this shape
//!
//! - **The time is in the entry.** A ledger value's header carries the
//!   click's time (unix seconds, from the engine's clock, so tests move
//!   it), so every reader — the click script and [`RedisStore::ledger_get`]
//!   alike — judges an entry's age from the entry alone, in the same
//!   step that reads it. An entry due but not folded yet is refused all
//!   the same: when the fold runs changes what is stored, never what a
//!   caller is answered.
//! - **An index of times finds what is due in bounded work.** Per user,
//!   two sorted sets (`{u:<user>}:lt` clicks, `:dt` delivered mail,
//!   member the message id, score its time) hold the entries that still
//!   carry tokens. Every click folds at most [`FOLD_PER_CLICK`] due entries
//!   of its user (`click.lua`), and the hourly background sweep
//!   ([`RedisStore::fold_ledgers`]) finishes every user's due entries in
//!   steps of [`FOLD_PER_CALL`] (`fold.lua`). Neither scans a ledger: the
//!   ledger values average ~4 KB, an index entry ~100 B.
//! - **A fold changes the ledger only.** The model already counts the
//!   click and keeps counting it, so there is no journal record: no
//!   replica's model changes. A folded click keeps its header (label,
//!   weight, time; kind `f`) and loses its tokens: 22 bytes.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::RwLock;
use redis::Script;

use super::{Keys, RedisStore, corrupt, user_of_key};
use crate::classify::Weight;
use crate::error::Error;
use crate::store::codec::{self, LedgerEntry};
use crate::store::{Clock, DEFAULT_DELIVERED_UNDO_WINDOW, DEFAULT_UNDO_WINDOW};
use crate::types::{Label, MessageId, UserId};

/// Due entries a click folds of its own user, at most, besides its own
/// work: enough to keep up with a user's clicks and deliveries (each
/// adds one entry), small enough not to lengthen a click.
pub(super) const FOLD_PER_CLICK: u32 = 8;

/// Due entries one call of the background sweep folds, at most: the
/// sweep calls again until a user has none left, so no one script runs
/// long on a shard.
const FOLD_PER_CALL: u32 = 500;

/// The fold's script: what the click script folds in passing, alone.
const FOLD: &str = include_str!("fold.lua");

static FOLD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FOLD));

/// The undo windows and the clock that measures them; shared by the
/// store's clones, set by the engine (`Backend::set_undo_window`).
#[derive(Clone, Debug)]
pub(super) struct UndoWindow(Arc<RwLock<Windows>>);

#[derive(Debug)]
struct Windows {
    window: Duration,
    delivered: Duration,
    clock: Clock,
}

/// The cutoffs in force for one script call: entries timed before them
/// (unix seconds) are beyond their window.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cutoffs {
    pub now_s: u64,
    pub click_s: u64,
    pub delivered_s: u64,
}

impl Default for UndoWindow {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(Windows {
            window: DEFAULT_UNDO_WINDOW,
            delivered: DEFAULT_DELIVERED_UNDO_WINDOW,
            clock: Clock::system(),
        })))
    }
}

impl UndoWindow {
    /// The cutoffs now, computed as the sled store does
    /// (`store::ledger::Undo`): the delivered window never longer than the
    /// click window.
    pub(super) fn cutoffs(&self) -> Cutoffs {
        let w = self.0.read();
        let now_ms = w.clock.now_ms();
        let before = |d: Duration| now_ms.saturating_sub(d.as_millis() as u64) / 1000;
        Cutoffs {
            now_s: now_ms / 1000,
            click_s: before(w.window),
            delivered_s: before(w.delivered.min(w.window)),
        }
    }

    /// The click window, for the error that names it.
    pub(super) fn window(&self) -> Duration {
        self.0.read().window
    }

    /// The error for a click on `msg` beyond the window.
    pub(super) fn beyond(&self, msg: &MessageId, label: Label) -> Error {
        Error::BeyondUndoWindow {
            message_id: msg.to_string(),
            label,
            window: self.window(),
        }
    }
}

/// A ledger value as stored: a live entry (tokens and all), or a click
/// folded past the undo window (its label only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Stored {
    Live { entry: LedgerEntry, time_s: u64 },
    Folded { label: Label, time_s: u64 },
}

/// Ledger values carry a fixed header the click script reads and writes:
/// label, weight, tokenizer version, kind, shared id, time.
pub(super) const HEADER: usize = 22;
/// The header's kind byte: a click, mail learned from its delivery, or a
/// click folded past the undo window (no tokens follow).
const KIND_CLICK: u8 = b'c';
const KIND_DELIVERED: u8 = b'i';
const KIND_FOLDED: u8 = b'f';

/// A ledger value for `entry` learned at `time_s` (the script writes the
/// shared id, and the weight of delivered mail).
pub(super) fn encode_ledger(entry: &LedgerEntry, time_s: u64) -> Vec<u8> {
    let body = codec::encode_ledger(entry);
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.push(entry.label.to_byte());
    out.extend_from_slice(&entry.weight.0.to_be_bytes());
    out.extend_from_slice(&entry.tokenizer_version.to_be_bytes());
    out.push(if entry.implicit {
        KIND_DELIVERED
    } else {
        KIND_CLICK
    });
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&clamp_time(time_s).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A folded click's value: the header alone.
pub(super) fn encode_folded(label: Label, time_s: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER);
    out.push(label.to_byte());
    out.extend_from_slice(&Weight::FULL.0.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.push(KIND_FOLDED);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&clamp_time(time_s).to_be_bytes());
    out
}

/// Unix seconds as the header's u32 (good until 2106).
fn clamp_time(time_s: u64) -> u32 {
    u32::try_from(time_s).unwrap_or(u32::MAX)
}

/// The header of ledger values written before the undo window (before
/// session 10): the same fields without the time, 18 bytes.
pub(super) const LEGACY_HEADER: usize = 18;

/// Whether `value` is a ledger value of the 18-byte layout (no click
/// time), which clusters written before the undo window hold until
/// `chaff upgrade` stamps them (`upgrade.rs`).
///
/// The layouts share their first 18 bytes, and nothing in them says which
/// one a value has, so the body tells: the ledger encoding after the
/// header starts with the label byte and the tokenizer version (a varint),
/// the same two facts the header holds (`codec::encode_ledger`). In the
/// 18-byte layout they follow the header at once; in the 22-byte one the
/// time's first two bytes stand there, which equal the label ('S' 0x53,
/// 'H' 0x48) and a tokenizer version below 128 only for times in one
/// 18-hour stretch of 2008 or of 2014, never a time chaff's clock writes.
/// A folded click (`f`) is never old: nothing folded before the window.
/// `click.lua` and `upgrade.lua` apply the same rule (`legacy`).
pub(super) fn is_legacy(value: &[u8]) -> bool {
    value.len() > LEGACY_HEADER + 1
        && matches!(value[9], KIND_CLICK | KIND_DELIVERED)
        && value[LEGACY_HEADER] == value[0]
        && value[5..8] == [0, 0, 0]
        && value[8] < 0x80
        && value[LEGACY_HEADER + 1] == value[8]
}

/// A stored ledger value, read. A value of the 18-byte layout (no time:
/// [`is_legacy`]) reads as learned at `legacy_time_s`: the reader's now,
/// so it stays undoable until `chaff upgrade` stamps it with the upgrade's
/// time (docs/SCALING.md, "Upgrading a cluster written before the undo
/// window").
pub(super) fn decode_stored(value: &[u8], legacy_time_s: u64) -> Result<Stored, Error> {
    let legacy = is_legacy(value);
    let (head, body) = value
        .split_at_checked(if legacy { LEGACY_HEADER } else { HEADER })
        .ok_or_else(|| corrupt("ledger header"))?;
    let label = Label::from_byte(head[0]).ok_or_else(|| corrupt("ledger label"))?;
    let time_s = if legacy {
        legacy_time_s
    } else {
        u64::from(u32::from_be_bytes(
            head[18..22].try_into().expect("4 bytes"),
        ))
    };
    let implicit = match head[9] {
        KIND_CLICK => false,
        KIND_DELIVERED => true,
        KIND_FOLDED => return Ok(Stored::Folded { label, time_s }),
        _ => return Err(corrupt("ledger kind")),
    };
    let mut entry = codec::decode_ledger(body)?;
    // The header is what counts: the script sets the weight of delivered
    // mail and the shared id.
    entry.label = label;
    entry.weight = Weight(u32::from_be_bytes(head[1..5].try_into().expect("4 bytes")));
    entry.implicit = implicit;
    entry.shared = u64::from_be_bytes(head[10..18].try_into().expect("8 bytes"));
    Ok(Stored::Live { entry, time_s })
}

/// A live ledger value's entry (journal records hold only live ones).
pub(super) fn decode_ledger(value: &[u8]) -> Result<LedgerEntry, Error> {
    // A journal record's time is never read.
    match decode_stored(value, 0)? {
        Stored::Live { entry, .. } => Ok(entry),
        Stored::Folded { .. } => Err(corrupt("a folded ledger entry in a journal record")),
    }
}

impl Stored {
    /// What a user's ledger read answers for this value under `cutoffs`,
    /// as the sled store does (`Store::contributor_ledger_get`): a click
    /// folded or past the window is [`Error::BeyondUndoWindow`]; delivered
    /// mail past its window reads as nothing (the fold drops it).
    pub(super) fn judged(
        self,
        msg: &MessageId,
        cutoffs: Cutoffs,
        window: &UndoWindow,
    ) -> Result<Option<LedgerEntry>, Error> {
        match self {
            Stored::Folded { label, .. } => Err(window.beyond(msg, label)),
            Stored::Live { entry, time_s } if entry.implicit => {
                Ok((time_s >= cutoffs.delivered_s).then_some(entry))
            }
            Stored::Live { entry, time_s } if time_s < cutoffs.click_s => {
                Err(window.beyond(msg, entry.label))
            }
            Stored::Live { entry, .. } => Ok(Some(entry)),
        }
    }
}

impl RedisStore {
    /// Sets the undo window and the clock clicks are timed by (the engine
    /// does, from its settings: `--undo-window`).
    pub fn set_undo_window(&self, window: Duration, clock: Clock) {
        let mut w = self.window.0.write();
        w.window = window;
        w.clock = clock;
    }

    /// Sets how long delivered mail's entries stay undoable
    /// (`--delivered-undo-window`; at most the undo window in effect).
    pub fn set_delivered_undo_window(&self, delivered: Duration) {
        self.window.0.write().delivered = delivered;
    }

    /// Folds one user's ledger entries past their windows (`fold.lua`, in
    /// steps of [`FOLD_PER_CALL`]); how many.
    pub async fn fold_user_ledger(&self, user: &UserId) -> Result<u64, Error> {
        let keys = Keys::of(user);
        let mut total = 0;
        loop {
            let c = self.window.cutoffs();
            let (folded, most): (u64, u64) = self
                .bounded("an undo-window fold", async {
                    let mut call = FOLD_SCRIPT.prepare_invoke();
                    call.key(&keys.ledger)
                        .key(&keys.times)
                        .key(&keys.delivered_times)
                        .arg(c.click_s)
                        .arg(c.delivered_s)
                        .arg(FOLD_PER_CALL);
                    self.invoke(FOLD, &call).await
                })
                .await?;
            total += folded;
            if most < u64::from(FOLD_PER_CALL) {
                return Ok(total);
            }
        }
    }

    /// The background sweep: folds every user's entries past their windows
    /// (a `SCAN` of every primary for the users' time indexes, then
    /// [`RedisStore::fold_user_ledger`] for each user whose oldest entry is
    /// due). Hourly, with the decision log's retention sweep; never on a
    /// request's path. Returns how many entries were folded or dropped.
    pub async fn fold_ledgers(&self) -> Result<u64, Error> {
        self.fold_ledgers_of("").await
    }

    /// [`RedisStore::fold_ledgers`] for the users whose ids start with
    /// `prefix` (tests share one cluster, and their clocks differ).
    pub async fn fold_ledgers_of(&self, prefix: &str) -> Result<u64, Error> {
        let mut glob = String::new();
        for c in prefix.chars() {
            match c {
                '%' => glob.push_str("%25"),
                '{' => glob.push_str("%7B"),
                '}' => glob.push_str("%7D"),
                '*' | '?' | '[' | ']' | '\\' => {
                    glob.push('\\');
                    glob.push(c);
                }
                c => glob.push(c),
            }
        }
        let mut users = Vec::new();
        for index in ["lt", "dt"] {
            let pattern = format!("{{u:{glob}*}}:{index}");
            for key in self
                .scan_primaries("an undo-window sweep", &pattern, Some("zset"))
                .await?
            {
                if let Some(user) = user_of_key(&key) {
                    users.push(user);
                }
            }
        }
        users.sort();
        users.dedup();
        let mut folded = 0;
        for user in users {
            folded += self.fold_user_ledger(&user).await?;
        }
        Ok(folded)
    }

    /// A user's ledger entry for `msg` judged by the undo window (see
    /// [`Stored::judged`]).
    pub(super) async fn ledger_get_judged(
        &self,
        user: &UserId,
        msg: &MessageId,
    ) -> Result<Option<LedgerEntry>, Error> {
        let Some(stored) = self.ledger_stored(&Keys::of(user), msg).await? else {
            return Ok(None);
        };
        stored.judged(msg, self.window.cutoffs(), &self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::{TOKENIZER_VERSION, TokenId};

    fn entry(label: Label, implicit: bool) -> LedgerEntry {
        LedgerEntry {
            label,
            tokenizer_version: TOKENIZER_VERSION,
            tokens: vec![TokenId(5), TokenId(1 << 40), TokenId(u64::MAX)],
            weight: Weight::FULL,
            shared: 0,
            implicit,
        }
    }

    /// The value the build before the undo window wrote: today's without
    /// the time's 4 bytes.
    fn legacy(e: &LedgerEntry) -> Vec<u8> {
        let mut v = encode_ledger(e, 0);
        v.drain(LEGACY_HEADER..HEADER);
        v
    }

    #[test]
    fn values_of_the_18_byte_layout_read_as_learned_at_the_time_given() {
        for e in [entry(Label::Spam, false), entry(Label::Ham, true)] {
            let v = legacy(&e);
            assert!(is_legacy(&v));
            assert_eq!(
                decode_stored(&v, 1_800_000_000).unwrap(),
                Stored::Live {
                    entry: e.clone(),
                    time_s: 1_800_000_000
                }
            );
            assert_eq!(decode_ledger(&v).unwrap(), e);
        }
    }

    #[test]
    fn no_value_chaffs_clock_writes_reads_as_the_old_layout() {
        // Every day from 2015 to 2106 (u32 seconds), both labels, both
        // kinds, and folded clicks: never taken for the 18-byte layout.
        for label in [Label::Spam, Label::Ham] {
            for implicit in [false, true] {
                let e = entry(label, implicit);
                let mut t = 1_420_070_400u64; // 2015-01-01
                while t < u64::from(u32::MAX) {
                    let v = encode_ledger(&e, t);
                    assert!(!is_legacy(&v), "{label:?} at {t}");
                    assert_eq!(
                        decode_stored(&v, 0).unwrap(),
                        Stored::Live {
                            entry: e.clone(),
                            time_s: t
                        }
                    );
                    assert!(!is_legacy(&encode_folded(label, t)));
                    t += 86_400;
                }
            }
        }
    }
}
