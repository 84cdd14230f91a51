//! One user's records as a portable byte stream: the per-user export and
//! import format (`ExportUser` / `ImportUser`, `chaff user export|import`),
//! documented in docs/OPERATIONS.md "Export format".
//!
//! ```text
//! magic    "CHAFFUSR"                       8 bytes
//! version  EXPORT_VERSION                   u32 BE
//! records  tag u8 · length u32 BE · payload, in this order:
//!   'U'  the user id (UTF-8), exactly one, first
//!   'M'  the model: a store snapshot (codec.rs), at most one
//!   'S'  settings (codec.rs; the consent id is written as 0), at most one
//!   'W'  a list entry: list kind byte ('a' allow, 'b' block) · entry text
//!   'L'  a learned message: id length u16 BE · id · click time (unix
//!        seconds) u64 BE · ledger entry (codec.rs `encode_ledger`)
//!   'F'  a click beyond the undo window, its tokens folded away: id
//!        length u16 BE · id · click time u64 BE · label byte
//!   'D'  a Score decision: time ms u64 BE · its JSON
//!   'E'  end: records before it (u64 BE) · xxh3-64 of every byte before
//!        this record (u64 BE); nothing may follow
//! ```
//!
//! The payloads are the store's own self-contained value encodings (the
//! format-5 ledger entry with its optional `implicit` byte, the format-4
//! snapshot with its recency section), so an export is exactly what the
//! store holds; format 6's dictionary numbers and checksums are the
//! store's own business and are not in it (the import numbers the tokens
//! in the importing user's dictionary). [`decode`] checks every payload,
//! so a damaged stream is refused naming the record, before anything is
//! written.
//!
//! Version 2 (format 6, the undo window) added each message's click time
//! to `L` and the `F` record; version 1 streams are refused by name.
//! Version 3 (store format 8) writes `M` as the format-8 snapshot, with the
//! part of the ham weight learned from delivered mail; a version-2 stream
//! is still read, its model's ham all counted as delivered (the format-8
//! upgrade's reading).

use sled::Batch;
use xxhash_rust::xxh3::xxh3_64;

use super::Store;
use super::codec::{self, LedgerEntry};
use super::dict::Dict;
use super::keys::*;
use crate::error::Error;
use crate::policy::{Entry, ListKind, UserSettings};
use crate::types::{Label, MessageId, Owner, UserId};

/// The export format's version: bumped with any change to the records or
/// to the store encodings they carry.
pub const EXPORT_VERSION: u32 = 3;

/// The oldest export version read (see the module's docs).
const OLDEST_READ: u32 = 2;

const MAGIC: &[u8; 8] = b"CHAFFUSR";

/// Records written per batch on import: sled's memory grows with batch size.
const IMPORT_CHUNK: usize = 256;

/// One user's records, as stored.
#[derive(Debug, Default)]
pub struct UserExport {
    pub user: Option<UserId>,
    /// A snapshot encoding of the user's model (journal folded in).
    pub model: Option<Vec<u8>>,
    pub settings: Option<UserSettings>,
    pub lists: Vec<(ListKind, Entry)>,
    /// Learned messages, with their click time (unix seconds, what the
    /// undo window is measured from) and ledger entries (shared ids kept
    /// as exported; cleared on import).
    pub ledger: Vec<(MessageId, u64, Learned)>,
    /// Score decisions: time and the stored JSON.
    pub decisions: Vec<(u64, Vec<u8>)>,
}

/// What the ledger holds for one message of an export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Learned {
    /// A click (or delivered mail) that can still be undone exactly.
    Live(LedgerEntry),
    /// A click beyond the undo window: only its label is kept.
    Folded(Label),
}

fn bad(what: impl Into<String>) -> Error {
    Error::InvalidArgument(format!("export stream: {}", what.into()))
}

fn record(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

fn list_kind(b: u8) -> Option<ListKind> {
    [ListKind::Allow, ListKind::Block]
        .into_iter()
        .find(|k| k.to_byte() == b)
}

/// The export's bytes.
pub fn encode(e: &UserExport) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&EXPORT_VERSION.to_be_bytes());
    let mut n = 0u64;
    let mut put = |out: &mut Vec<u8>, tag, payload: &[u8]| {
        record(out, tag, payload);
        n += 1;
    };
    if let Some(u) = &e.user {
        put(&mut out, b'U', u.as_str().as_bytes());
    }
    if let Some(m) = &e.model {
        put(&mut out, b'M', m);
    }
    if let Some(s) = &e.settings {
        put(&mut out, b'S', &codec::encode_settings(s, 0));
    }
    for (kind, entry) in &e.lists {
        let mut p = vec![kind.to_byte()];
        p.extend_from_slice(entry.to_string().as_bytes());
        put(&mut out, b'W', &p);
    }
    for (id, time_s, learned) in &e.ledger {
        let mut p = (id.as_str().len() as u16).to_be_bytes().to_vec();
        p.extend_from_slice(id.as_str().as_bytes());
        p.extend_from_slice(&time_s.to_be_bytes());
        match learned {
            Learned::Live(entry) => {
                p.extend_from_slice(&codec::encode_ledger(entry));
                put(&mut out, b'L', &p);
            }
            Learned::Folded(label) => {
                p.push(label.to_byte());
                put(&mut out, b'F', &p);
            }
        }
    }
    for (time, json) in &e.decisions {
        let mut p = time.to_be_bytes().to_vec();
        p.extend_from_slice(json);
        put(&mut out, b'D', &p);
    }
    let mut end = n.to_be_bytes().to_vec();
    end.extend_from_slice(&xxh3_64(&out).to_be_bytes());
    record(&mut out, b'E', &end);
    out
}

/// Refuses `start`, the first bytes of a stream (any number of them), if
/// no export starts that way: the magic, then a version this build reads.
/// Why apart from [`decode`]: ImportUser checks the first message it
/// receives, so a stream that is not an export is refused before the rest
/// of it (up to a gigabyte) is received and held.
pub fn check_start(start: &[u8]) -> Result<(), Error> {
    let magic = &start[..start.len().min(MAGIC.len())];
    if magic != &MAGIC[..magic.len()] {
        return Err(not_an_export());
    }
    if let Some(v) = start.get(8..12) {
        let version = u32::from_be_bytes(v.try_into().unwrap());
        if !(OLDEST_READ..=EXPORT_VERSION).contains(&version) {
            return Err(bad(format!(
                "format version {version}; this chaff reads versions {OLDEST_READ} to {EXPORT_VERSION}"
            )));
        }
    }
    Ok(())
}

fn not_an_export() -> Error {
    bad("not a chaff user export (it does not start with \"CHAFFUSR\")")
}

/// Reads and checks a whole export: magic, version, every record's
/// payload, the record count and checksum. Errors are INVALID_ARGUMENT
/// naming what is wrong.
pub fn decode(bytes: &[u8]) -> Result<UserExport, Error> {
    if bytes.len() < 12 {
        return Err(not_an_export());
    }
    check_start(bytes)?;
    let mut e = UserExport::default();
    let mut at = 12;
    let mut n = 0u64;
    loop {
        let start = at;
        let header = bytes
            .get(at..at + 5)
            .ok_or_else(|| bad(format!("truncated at byte {at}: the end record is missing")))?;
        let tag = header[0];
        let len = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
        let payload = bytes.get(at + 5..at + 5 + len).ok_or_else(|| {
            bad(format!(
                "truncated in record {n} ('{}') at byte {at}",
                tag as char
            ))
        })?;
        at += 5 + len;
        let which = || format!("record {n} ('{}')", tag as char);
        let text = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_string)
                .map_err(|_| bad(format!("{} is not UTF-8", which())))
        };
        match tag {
            b'E' => {
                if payload.len() != 16 {
                    return Err(bad("end record is damaged"));
                }
                let count = u64::from_be_bytes(payload[..8].try_into().unwrap());
                let sum = u64::from_be_bytes(payload[8..].try_into().unwrap());
                if count != n {
                    return Err(bad(format!(
                        "{n} records where the end record says {count}"
                    )));
                }
                if sum != xxh3_64(&bytes[..start]) {
                    return Err(bad("checksum mismatch: the stream was changed or damaged"));
                }
                if at != bytes.len() {
                    return Err(bad(format!(
                        "{} bytes after the end record",
                        bytes.len() - at
                    )));
                }
                break;
            }
            b'U' if n == 0 => {
                e.user = Some(
                    UserId::stored(text(payload)?)
                        .map_err(|err| bad(format!("{}: {err}", which())))?,
                );
            }
            _ if n == 0 => return Err(bad("the first record must be the user id ('U')")),
            b'M' if e.model.is_none() => {
                codec::decode_snapshot(payload)
                    .map_err(|err| bad(format!("{}: {err}", which())))?;
                e.model = Some(payload.to_vec());
            }
            b'S' if e.settings.is_none() => {
                let (s, _) = codec::decode_settings(payload)
                    .map_err(|err| bad(format!("{}: {err}", which())))?;
                s.updated(&Default::default())
                    .map_err(|err| bad(format!("{}: {err}", which())))?;
                e.settings = Some(s);
            }
            b'W' => {
                let (&k, entry) = payload
                    .split_first()
                    .ok_or_else(|| bad(format!("{} is empty", which())))?;
                let kind =
                    list_kind(k).ok_or_else(|| bad(format!("{}: unknown list kind", which())))?;
                let entry = Entry::stored(&text(entry)?)
                    .map_err(|err| bad(format!("{}: {err}", which())))?;
                e.lists.push((kind, entry));
            }
            b'L' | b'F' => {
                let truncated = || bad(format!("{} is truncated", which()));
                let len = payload
                    .get(..2)
                    .map(|b| u16::from_be_bytes(b.try_into().unwrap()) as usize)
                    .ok_or_else(truncated)?;
                let id = payload.get(2..2 + len).ok_or_else(truncated)?;
                let id = MessageId::stored(text(id)?)
                    .map_err(|err| bad(format!("{}: {err}", which())))?;
                let time_s = payload
                    .get(2 + len..10 + len)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
                    .ok_or_else(truncated)?;
                let rest = &payload[10 + len..];
                let learned = if tag == b'L' {
                    Learned::Live(
                        codec::decode_ledger(rest)
                            .map_err(|err| bad(format!("{}: {err}", which())))?,
                    )
                } else {
                    match rest {
                        [b] => Learned::Folded(
                            Label::from_byte(*b)
                                .ok_or_else(|| bad(format!("{}: unknown label", which())))?,
                        ),
                        _ => return Err(bad(format!("{}: damaged", which()))),
                    }
                };
                e.ledger.push((id, time_s, learned));
            }
            b'D' => {
                let time = payload
                    .get(..8)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
                    .ok_or_else(|| bad(format!("{} is truncated", which())))?;
                e.decisions.push((time, payload[8..].to_vec()));
            }
            b'M' | b'S' => return Err(bad(format!("{} repeats a single record", which()))),
            _ => return Err(bad(format!("{}: unknown record tag", which()))),
        }
        n += 1;
    }
    if e.user.is_none() {
        return Err(bad("no user id record"));
    }
    Ok(e)
}

impl<W: super::Writes> Store<W> {
    /// Everything stored for `user`, for [`encode`]. The caller keeps the
    /// user's clicks out meanwhile (the engine holds its writer lock), so
    /// model and ledger agree.
    pub fn read_user_export(&self, user: &UserId) -> Result<UserExport, Error> {
        let model = self
            .load_model(user)?
            .map(|l| codec::encode_snapshot(&l.model, 0));
        let settings = self.settings(user)?.map(|(s, _)| s);
        let mut lists = Vec::new();
        for kind in [ListKind::Allow, ListKind::Block] {
            for entry in self.list_entries(&Owner::User(user.clone()), kind)? {
                lists.push((kind, entry));
            }
        }
        let ledger = self.with_dict(&Owner::User(user.clone()), |dict| {
            let mut ledger = Vec::new();
            let prefix = user_prefix(LEDGER, user);
            for item in self.tree()?.scan_prefix(&prefix) {
                let (key, value) = item?;
                let id = std::str::from_utf8(&key[prefix.len()..]).map_err(|_| Error::Corrupt {
                    what: "ledger key".into(),
                })?;
                let id = MessageId::stored(id).map_err(|_| Error::Corrupt {
                    what: "ledger key".into(),
                })?;
                let (label, facts) = codec::ledger_facts(&key, &value)?;
                let time_s = facts.time_s.unwrap_or(self.legacy_time_s);
                let learned = if facts.folded {
                    Learned::Folded(label)
                } else {
                    Learned::Live(codec::decode_ledger_any(&key, &value, Some(dict))?)
                };
                ledger.push((id, time_s, learned));
            }
            Ok(ledger)
        })?;
        let mut decisions = Vec::new();
        let prefix = user_prefix(DECISION, user);
        for item in self.tree()?.scan_prefix(&prefix) {
            let (key, value) = item?;
            let time = key
                .get(prefix.len()..prefix.len() + 8)
                .ok_or_else(|| Error::Corrupt {
                    what: "decision key".into(),
                })?;
            decisions.push((u64::from_be_bytes(time.try_into().unwrap()), value.to_vec()));
        }
        Ok(UserExport {
            user: Some(user.clone()),
            model,
            settings,
            lists,
            ledger,
            decisions,
        })
    }

    /// Writes an export's records for `user`, who must have nothing stored
    /// (the engine checks). Ledger entries and decisions go first in
    /// bounded batches (neither makes a user visible to scoring); model,
    /// settings (with `consent`) and lists last, in one batch. Not flushed.
    /// Ledger entries lose their shared ids: the user's part of the source
    /// server's shared model does not move with them.
    pub fn write_user_import(
        &self,
        user: &UserId,
        e: &UserExport,
        consent: u64,
    ) -> Result<(), Error> {
        self.write_user_records(user, e, consent, false)
    }

    /// [`Store::write_user_import`], keeping the ledger entries' shared
    /// ids when `keep_shared`: a backup brings the user's shared part and
    /// consent id along (`backup.rs`), so a Forget after a restore takes a
    /// shared click out of the part exactly, as on the source.
    pub(super) fn write_user_records(
        &self,
        user: &UserId,
        e: &UserExport,
        consent: u64,
        keep_shared: bool,
    ) -> Result<(), Error> {
        let who = Owner::User(user.clone());
        self.write_ledger_records(&who, &e.ledger, keep_shared)?;
        for chunk in e.decisions.chunks(IMPORT_CHUNK) {
            self.append_decisions(chunk.iter().map(|(t, json)| (user, *t, json.as_slice())))?;
        }
        let mut batch = Batch::default();
        if let Some(model) = &e.model {
            let (model, _) = codec::decode_snapshot(model)?;
            batch.insert(user_prefix(MODEL, user), codec::encode_snapshot(&model, 0));
        }
        if let Some(s) = &e.settings {
            batch.insert(
                user_prefix(SETTINGS, user),
                codec::encode_settings(s, consent),
            );
        }
        for (kind, entry) in &e.lists {
            let mut key = list_prefix(&Owner::User(user.clone()), *kind);
            key.extend_from_slice(entry.to_string().as_bytes());
            batch.insert(key, &[][..]);
        }
        self.tree()?.apply_batch(batch)?;
        Ok(())
    }

    /// Writes ledger entries for `who` (a user, or the operator's seed) in
    /// bounded batches, numbering their tokens in `who`'s dictionary;
    /// shared ids cleared unless `keep_shared`.
    pub(super) fn write_ledger_records(
        &self,
        who: &Owner,
        ledger: &[(MessageId, u64, Learned)],
        keep_shared: bool,
    ) -> Result<(), Error> {
        for chunk in ledger.chunks(IMPORT_CHUNK) {
            self.with_dict(who, |dict| {
                // Number the chunk's tokens in the user's dictionary, in
                // the chunk's own batch (as a click does).
                let before = dict.len();
                let ids = chunk.iter().flat_map(|(_, _, l)| match l {
                    Learned::Live(entry) => entry.tokens.as_slice(),
                    Learned::Folded(_) => &[],
                });
                dict.extend(ids.copied()).ok_or_else(|| Error::Corrupt {
                    what: format!("token dictionary of {who} is full"),
                })?;
                let mut batch = Batch::default();
                if dict.len() > before {
                    let key = dict_key(&contributor_prefix(DICT, who), before);
                    let value = codec::encode_dict(&key, &dict.ids()[before..]);
                    batch.insert(key, value);
                }
                for (id, time_s, learned) in chunk {
                    let key = ledger_key(who, id);
                    let value = import_ledger(&key, *time_s, learned, dict, keep_shared);
                    batch.insert(key, value);
                }
                if let Err(e) = self.tree()?.apply_batch(batch) {
                    dict.truncate(before);
                    return Err(e.into());
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// An imported ledger entry in format 6. Sequence number 0: no journal
/// record of this server stands for it (the imported snapshot counts it).
fn import_ledger(
    key: &[u8],
    time_s: u64,
    learned: &Learned,
    dict: &Dict,
    keep_shared: bool,
) -> Vec<u8> {
    match learned {
        Learned::Live(entry) => {
            let entry = LedgerEntry {
                shared: if keep_shared { entry.shared } else { 0 },
                ..entry.clone()
            };
            codec::encode_ledger_v6(key, &entry, 0, time_s, dict)
        }
        Learned::Folded(label) => codec::encode_ledger_folded(key, *label, time_s),
    }
}
