//! A user's delivery settings and the allow/block/trusted lists.

use sled::Batch;

use super::Store;
use super::codec::{self};
use super::keys::*;
use crate::error::Error;
use crate::policy::{Entry, ListKind, UserSettings};
use crate::types::{Owner, UserId};

impl<W: super::Writes> Store<W> {
    /// The user's delivery settings and current consent id (0: not
    /// sharing), if ever set.
    pub fn settings(&self, user: &UserId) -> Result<Option<(UserSettings, u64)>, Error> {
        match self.tree()?.get(user_prefix(SETTINGS, user))? {
            Some(bytes) => Ok(Some(codec::decode_settings(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores the user's settings and consent id (durable after
    /// [`Store::flush`]). With `clear_shared`, the user's shared part goes
    /// in the same batch: revoking consent is one atomic change.
    pub fn put_settings(
        &self,
        user: &UserId,
        settings: &UserSettings,
        consent: u64,
        clear_shared: bool,
    ) -> Result<(), Error> {
        let mut batch = Batch::default();
        batch.insert(
            user_prefix(SETTINGS, user),
            codec::encode_settings(settings, consent),
        );
        if clear_shared {
            self.clear_contribution(&Owner::User(user.clone()), &mut batch)?;
        }
        // Not flushed: the engine changes its memory to match first (memory
        // follows what sled holds, durable or not), then flushes.
        self.tree()?.apply_batch(batch)?;
        Ok(())
    }

    /// Every entry on one list, in key order.
    pub fn list_entries(&self, owner: &Owner, kind: ListKind) -> Result<Vec<Entry>, Error> {
        let prefix = list_prefix(owner, kind);
        let mut out = Vec::new();
        for item in self.tree()?.scan_prefix(&prefix) {
            let (key, _) = item?;
            let text = std::str::from_utf8(&key[prefix.len()..]).map_err(|_| Error::Corrupt {
                what: "list entry is not UTF-8".into(),
            })?;
            out.push(Entry::stored(text).map_err(|e| Error::Corrupt {
                what: format!("list entry {text:?}: {e}"),
            })?);
        }
        Ok(out)
    }

    /// Adds (`present`) or removes an entry durably; returns whether the
    /// list changed.
    pub fn set_list_entry(
        &self,
        owner: &Owner,
        kind: ListKind,
        entry: &Entry,
        present: bool,
    ) -> Result<bool, Error> {
        let mut key = list_prefix(owner, kind);
        key.extend_from_slice(entry.to_string().as_bytes());
        let changed = if present {
            self.tree()?.insert(key, &[][..])?.is_none()
        } else {
            self.tree()?.remove(key)?.is_some()
        };
        // Flushed even when nothing changed: "already there" (or "already
        // gone") may rest on another caller's change that is not durable
        // yet, and the reply must not acknowledge what a crash can undo
        // (as Train flushes before ALREADY_LEARNED).
        self.flush()?;
        Ok(changed)
    }
}
