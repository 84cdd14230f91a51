//! The decision log's records: appended by its writer thread, found by
//! support queries, trimmed by retention.

use sled::Batch;

use super::Store;
use super::keys::*;
use crate::error::Error;
use crate::types::UserId;

impl<W: super::Writes> Store<W> {
    /// Appends decisions (not flushed: the log is for support, and sled's
    /// background flush bounds what a crash loses to ~500 ms).
    pub fn append_decisions<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a UserId, u64, &'a [u8])>,
    ) -> Result<(), Error> {
        let mut batch = Batch::default();
        for (user, time_ms, json) in records {
            let seq = self.generate_id()?;
            batch.insert(decision_key(user, time_ms, seq), json);
        }
        self.tree()?.apply_batch(batch)?;
        Ok(())
    }

    /// The user's decisions from `since_ms` to `until_ms` (inclusive), newest
    /// first, as `read` decodes them (`None` skips a record), at most `limit`.
    pub fn find_decisions<T>(
        &self,
        user: &UserId,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
        mut read: impl FnMut(&[u8]) -> Result<Option<T>, Error>,
    ) -> Result<Vec<T>, Error> {
        let start = decision_key(user, since_ms, 0);
        let end = decision_key(user, until_ms, u64::MAX);
        let mut out = Vec::new();
        for item in self.tree()?.range(start..=end).rev() {
            let (_, value) = item?;
            if let Some(found) = read(&value)? {
                out.push(found);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Deletes the user's decisions older than `before_ms` and all but the
    /// newest `keep`. Returns how many were deleted.
    pub fn trim_decisions(
        &self,
        user: &UserId,
        before_ms: u64,
        keep: usize,
    ) -> Result<usize, Error> {
        let prefix = user_prefix(DECISION, user);
        let mut batch = Batch::default();
        let mut deleted = 0;
        for (i, item) in self.tree()?.scan_prefix(&prefix).rev().enumerate() {
            let (key, _) = item?;
            let time = u64::from_be_bytes(key[prefix.len()..prefix.len() + 8].try_into().map_err(
                |_| Error::Corrupt {
                    what: "decision key".into(),
                },
            )?);
            if i >= keep || time < before_ms {
                batch.remove(key);
                deleted += 1;
            }
        }
        self.tree()?.apply_batch(batch)?;
        Ok(deleted)
    }

    /// Every user with a decision older than `before_ms`, for the periodic
    /// retention sweep (one key read per user, skipping over their range).
    pub fn users_with_decisions_before(&self, before_ms: u64) -> Result<Vec<UserId>, Error> {
        let mut users = Vec::new();
        let mut from = vec![DECISION];
        loop {
            let Some(item) = self
                .tree()?
                .range(from.clone()..prefix_end(&[DECISION]))
                .next()
            else {
                break;
            };
            let (key, _) = item?;
            let bad = || Error::Corrupt {
                what: "decision key".into(),
            };
            let len = usize::from(u16::from_be_bytes(
                key.get(1..3).ok_or_else(bad)?.try_into().unwrap(),
            ));
            let id =
                std::str::from_utf8(key.get(3..3 + len).ok_or_else(bad)?).map_err(|_| bad())?;
            let user = UserId::stored(id).map_err(|_| bad())?;
            let time = u64::from_be_bytes(
                key.get(3 + len..11 + len)
                    .ok_or_else(bad)?
                    .try_into()
                    .unwrap(),
            );
            if time < before_ms {
                users.push(user.clone());
            }
            from = prefix_end(&user_prefix(DECISION, &user));
        }
        Ok(users)
    }
}
