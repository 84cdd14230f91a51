//! Keys: one tree, typed fixed-width big-endian keys, a one-byte family
//! first. The only place key bytes are built or read.

use crate::error::Error;
use crate::policy::ListKind;
use crate::types::{MessageId, Owner, UserId};

pub(super) const FORMAT_KEY: &[u8] = b"F";
pub(super) const LEDGER: u8 = b'L';
pub(super) const JOURNAL: u8 = b'J';
pub(super) const MODEL: u8 = b'M';
pub(super) const SETTINGS: u8 = b'S';
pub(super) const LIST: u8 = b'W';
pub(super) const DECISION: u8 = b'D';
pub(super) const CONTRIBUTION: u8 = b'G';
pub(super) const CONTRIBUTION_JOURNAL: u8 = b'H';
pub(super) const SEED_ID_KEY: &[u8] = b"O";
pub(super) const DICT: u8 = b'K';
/// `X` · user: a DeleteUser has started and not finished (empty value).
pub(super) const DELETING: u8 = b'X';
/// When the directory was upgraded to format 6 (unix ms, u64 BE): the
/// click time of ledger entries written before (`Store::ledger_get`).
pub(super) const UPGRADED_KEY: &[u8] = b"U";

/// A dictionary record's key: `K` · contributor · first number (u32 BE).
pub(super) fn dict_key(prefix: &[u8], first: usize) -> Vec<u8> {
    let mut k = prefix.to_vec();
    // A dictionary never passes 2^32 entries (`Dict::extend`).
    k.extend_from_slice(&(first as u32).to_be_bytes());
    k
}
pub(super) const ID_OFFSET_KEY: &[u8] = b"I";

pub(super) fn contributor_prefix(kind: u8, who: &Owner) -> Vec<u8> {
    match who {
        Owner::User(user) => user_prefix(kind, user),
        Owner::Operator => vec![kind, 0, 0],
    }
}

pub(super) fn contribution_journal_key(who: &Owner, seq: u64) -> Vec<u8> {
    let mut k = contributor_prefix(CONTRIBUTION_JOURNAL, who);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The contributor a `G`/`H` key names, and the rest of the key.
pub(super) fn decode_contributor(key: &[u8]) -> Result<(Owner, &[u8]), Error> {
    let bad = || Error::Corrupt {
        what: "shared contribution key".into(),
    };
    let len = usize::from(u16::from_be_bytes(
        key.get(1..3).ok_or_else(bad)?.try_into().unwrap(),
    ));
    let id = key.get(3..3 + len).ok_or_else(bad)?;
    let who = if len == 0 {
        Owner::Operator
    } else {
        let id = std::str::from_utf8(id).map_err(|_| bad())?;
        Owner::User(UserId::stored(id).map_err(|_| bad())?)
    };
    Ok((who, &key[3 + len..]))
}

pub(super) fn user_prefix(kind: u8, user: &UserId) -> Vec<u8> {
    let id = user.as_str().as_bytes();
    let mut k = Vec::with_capacity(3 + id.len() + 16);
    k.push(kind);
    // UserId guarantees ≤ 256 bytes, so the length fits in u16.
    k.extend_from_slice(&(id.len() as u16).to_be_bytes());
    k.extend_from_slice(id);
    k
}

pub(super) fn ledger_key(who: &Owner, msg: &MessageId) -> Vec<u8> {
    let mut k = contributor_prefix(LEDGER, who);
    k.extend_from_slice(msg.as_str().as_bytes());
    k
}

pub(super) fn journal_key(user: &UserId, seq: u64) -> Vec<u8> {
    let mut k = user_prefix(JOURNAL, user);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// An operator-wide list is keyed as if by a zero-length user id, which no
/// real user id can be.
pub(super) fn list_prefix(owner: &Owner, kind: ListKind) -> Vec<u8> {
    let mut k = match owner {
        Owner::User(user) => user_prefix(LIST, user),
        Owner::Operator => vec![LIST, 0, 0],
    };
    k.push(kind.to_byte());
    k
}

pub(super) fn decision_key(user: &UserId, time_ms: u64, seq: u64) -> Vec<u8> {
    let mut k = user_prefix(DECISION, user);
    k.extend_from_slice(&time_ms.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The user a key of a per-user family (`kind` · user · …) names.
pub(super) fn user_in_key(key: &[u8]) -> Result<UserId, Error> {
    let bad = || Error::Corrupt {
        what: "user key".into(),
    };
    let len = usize::from(u16::from_be_bytes(
        key.get(1..3).ok_or_else(bad)?.try_into().unwrap(),
    ));
    let id = key.get(3..3 + len).ok_or_else(bad)?;
    let id = std::str::from_utf8(id).map_err(|_| bad())?;
    UserId::stored(id).map_err(|_| bad())
}

/// The end of a key range that starts with `prefix`.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.push(0xFF);
    end
}
