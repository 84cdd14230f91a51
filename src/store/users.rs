//! Whole-user operations: existence and deletion of everything a user has.

use sled::Batch;

use super::keys::*;
use super::{DELETE_CHUNK, Store};
use crate::error::Error;
use crate::types::{Owner, UserId};

impl<W: super::Writes> Store<W> {
    /// Deletes every key under `prefix`, `DELETE_CHUNK` keys per batch.
    pub(super) fn delete_prefix(&self, prefix: &[u8]) -> Result<(), Error> {
        loop {
            let mut batch = Batch::default();
            let mut n = 0;
            for item in self.tree()?.scan_prefix(prefix).take(DELETE_CHUNK) {
                batch.remove(item?.0);
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            self.tree()?.apply_batch(batch)?;
        }
    }

    /// Deletes a user's model, journal, settings, lists and shared part,
    /// in one batch: after it the user is gone for scoring and for the
    /// shared model. [`Store::finish_delete_user`] does the rest.
    ///
    /// The same batch writes the user's deletion mark (`X`), which only
    /// the end of [`Store::finish_delete_user`] removes: a crash between
    /// the two would otherwise leave the user's ledger (its clicks, with no
    /// model counting them: a Train of one answered ALREADY_LEARNED, a
    /// Forget took counts the model never had), dictionary and decisions
    /// behind. Opening the store finishes every marked deletion
    /// ([`Store::finish_interrupted_deletes`]). Found by the crash soak.
    pub fn delete_user(&self, user: &UserId) -> Result<(), Error> {
        let who = Owner::User(user.clone());
        let mut batch = Batch::default();
        batch.insert(user_prefix(DELETING, user), &[][..]);
        batch.remove(user_prefix(MODEL, user));
        batch.remove(user_prefix(SETTINGS, user));
        for kind in [JOURNAL, LIST] {
            for item in self.tree()?.scan_prefix(user_prefix(kind, user)) {
                batch.remove(item?.0);
            }
        }
        self.clear_contribution(&who, &mut batch)?;
        self.tree()?.apply_batch(batch)?;
        Ok(())
    }

    /// The rest of [`Store::delete_user`], after the engine has dropped the
    /// user from memory: their ledger and logged decisions (in bounded
    /// batches), then a flush. Calling it again finishes an interrupted one.
    pub fn finish_delete_user(&self, user: &UserId) -> Result<(), Error> {
        self.delete_prefix(&user_prefix(LEDGER, user))?;
        // After the ledger, whose entries its numbers name.
        self.delete_dict(&Owner::User(user.clone()))?;
        self.delete_prefix(&user_prefix(DECISION, user))?;
        self.tree()?.remove(user_prefix(DELETING, user))?;
        self.flush()
    }

    /// Finishes every DeleteUser a crash interrupted (its mark is still
    /// there, see [`Store::delete_user`]); how many. Called when the store
    /// is opened, before anything reads a user.
    pub(super) fn finish_interrupted_deletes(&self) -> Result<u64, Error> {
        let mut users = Vec::new();
        for item in self.tree()?.scan_prefix([DELETING]) {
            let (key, _) = item?;
            users.push(user_in_key(&key)?);
        }
        for user in &users {
            tracing::warn!(
                user = user.as_str(),
                "finishing a DeleteUser that a crash interrupted"
            );
            self.finish_delete_user(user)?;
        }
        Ok(users.len() as u64)
    }

    /// Whether anything at all is stored for a user.
    pub fn user_exists(&self, user: &UserId) -> Result<bool, Error> {
        for kind in [
            MODEL,
            JOURNAL,
            SETTINGS,
            LEDGER,
            LIST,
            DECISION,
            CONTRIBUTION,
        ] {
            if self
                .tree()?
                .scan_prefix(user_prefix(kind, user))
                .next()
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl<W: super::Writes> Store<W> {
    /// How many records of each family (by its key byte) the store holds
    /// for `user`, decisions left out, dictionary included: all zero once a
    /// DeleteUser has finished (or never started). For checks (the crash
    /// soak), not for serving: one range read per family.
    pub fn user_records(&self, user: &UserId) -> Result<Vec<(char, u64)>, Error> {
        let mut out = Vec::new();
        for kind in USER_FAMILIES.into_iter().chain([DICT]) {
            if kind == DECISION {
                continue;
            }
            let n = self.tree()?.scan_prefix(user_prefix(kind, user)).count() as u64;
            if n > 0 {
                out.push((char::from(kind), n));
            }
        }
        Ok(out)
    }
}

/// Every key family that can hold a user's records: a user exists while any
/// of them does (a user only ever scored has only decisions).
pub(super) const USER_FAMILIES: [u8; 8] = [
    MODEL,
    JOURNAL,
    SETTINGS,
    LEDGER,
    LIST,
    DECISION,
    CONTRIBUTION,
    CONTRIBUTION_JOURNAL,
];

/// The first byte string after every string that starts with `prefix`
/// (`None`: there is none, the range is unbounded above).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xFF {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// The order users are listed in: the store's key order (the id's length
/// first, then its bytes), so a page continues with one range read per
/// key family.
pub fn listing_order(user: &UserId) -> (usize, &[u8]) {
    (user.as_str().len(), user.as_str().as_bytes())
}

impl<W: super::Writes> Store<W> {
    /// Users with anything stored whose id starts with `prefix`, after
    /// `after` in [`listing_order`], at most `limit` of them.
    ///
    /// Keys are ordered by the id's length, then its bytes, so for each
    /// length the ids with `prefix` are one contiguous key range per
    /// family: a page costs a range read per family and length, and one
    /// read per listed user and family, whatever the number of users
    /// without the prefix.
    pub fn list_users(
        &self,
        prefix: &str,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, Error> {
        let mut heads = Vec::with_capacity(USER_FAMILIES.len());
        for kind in USER_FAMILIES {
            heads.push(self.next_user_in(kind, prefix, after)?);
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(next) = heads
                .iter()
                .flatten()
                .min_by(|a, b| listing_order(a).cmp(&listing_order(b)))
                .cloned()
            else {
                break;
            };
            for (i, kind) in USER_FAMILIES.into_iter().enumerate() {
                if heads[i].as_ref() == Some(&next) {
                    heads[i] = self.next_user_in(kind, prefix, Some(&next))?;
                }
            }
            out.push(next);
        }
        Ok(out)
    }

    /// The first user with records of family `kind` whose id starts with
    /// `prefix`, after `after` in [`listing_order`].
    fn next_user_in(
        &self,
        kind: u8,
        prefix: &str,
        after: Option<&UserId>,
    ) -> Result<Option<UserId>, Error> {
        let first_len = prefix
            .len()
            .max(1)
            .max(after.map_or(0, |a| a.as_str().len()));
        for len in first_len..=crate::types::MAX_USER_ID_BYTES {
            let mut low = vec![kind];
            low.extend_from_slice(&(len as u16).to_be_bytes());
            low.extend_from_slice(prefix.as_bytes());
            let high = prefix_successor(&low);
            if let Some(a) = after.filter(|a| a.as_str().len() == len) {
                // Past every key of `after` itself.
                match prefix_successor(&user_prefix(kind, a)) {
                    Some(past) if past > low => low = past,
                    Some(_) => {}
                    None => continue,
                }
            }
            let first = match &high {
                Some(high) if &low >= high => continue,
                Some(high) => self.tree()?.range(low..high.clone()).next(),
                None => self.tree()?.range(low..).next(),
            };
            if let Some(item) = first {
                let (key, _) = item?;
                let bad = || Error::Corrupt {
                    what: "user key".into(),
                };
                let id = key.get(3..3 + len).ok_or_else(bad)?;
                let id = std::str::from_utf8(id).map_err(|_| bad())?;
                return Ok(Some(UserId::stored(id).map_err(|_| bad())?));
            }
        }
        Ok(None)
    }

    /// When the user's newest logged Score decision was made (ms since the
    /// Unix epoch), if any is kept: the only activity time chaff stores
    /// (clicks are ordered by sequence number, not timed).
    pub fn last_decision_ms(&self, user: &UserId) -> Result<Option<u64>, Error> {
        let prefix = user_prefix(DECISION, user);
        let Some(item) = self.tree()?.scan_prefix(&prefix).next_back() else {
            return Ok(None);
        };
        let (key, _) = item?;
        let time = key
            .get(prefix.len()..prefix.len() + 8)
            .ok_or_else(|| Error::Corrupt {
                what: "decision key".into(),
            })?;
        Ok(Some(u64::from_be_bytes(time.try_into().unwrap())))
    }
}
