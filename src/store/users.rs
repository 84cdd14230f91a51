//! Whole-user operations: existence and deletion of everything a user has.

use sled::Batch;

use super::keys::*;
use super::{DELETE_CHUNK, Store};
use crate::error::Error;
use crate::types::{Owner, UserId};

impl Store {
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
    pub fn delete_user(&self, user: &UserId) -> Result<(), Error> {
        let who = Owner::User(user.clone());
        let mut batch = Batch::default();
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
        self.flush()
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
