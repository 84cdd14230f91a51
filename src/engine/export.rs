//! Per-user export and import (`ExportUser` / `ImportUser`): the
//! data-subject access request, and moving a user between servers. The
//! format is `store::export`'s.

use super::Engine;
use crate::error::Error;
use crate::store::Aggregate;
use crate::store::export::{self, UserExport};
use crate::types::UserId;

/// Largest export `ImportUser` accepts: the stream is decoded whole, in
/// memory, before anything is written.
pub const MAX_IMPORT_BYTES: usize = 1 << 30;

/// What an import wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Imported {
    pub messages: u64,
    pub decisions: u64,
    pub list_entries: u64,
    /// The user had records before and `replace` deleted them first.
    pub replaced: bool,
}

impl Engine {
    /// Everything chaff keeps for `user`, in the export format; `None` for
    /// a user with nothing stored. Read under the user's writer lock, so no
    /// click lands between the model and the ledger.
    pub fn export_user(&self, user: &UserId) -> Result<Option<Vec<u8>>, Error> {
        self.needs(Aggregate::Export)?;
        // Decisions still queued for the log belong in the export.
        self.decisions.settle(std::time::Duration::from_secs(5));
        let read = self.with_known_writer(user, |_, _| self.store.read_user_export(user))?;
        let e = match read {
            Some(e) => e,
            // No model or policy, but maybe ledger entries or decisions.
            None if self.store.user_exists(user)? => self.store.read_user_export(user)?,
            None => return Ok(None),
        };
        Ok(Some(export::encode(&e)))
    }

    /// Writes an export (checked whole first: a damaged or wrong-version
    /// stream is INVALID_ARGUMENT and nothing is written) as `user`, who
    /// must be the exported user. A user with anything stored is refused
    /// unless `replace`, which deletes them first. Durable when it returns.
    ///
    /// Runs under the user's writer lock: clicks for the user wait, and
    /// find the imported state after. Not one atomic change: an import cut
    /// short (a crash) can leave part of the user; import again with
    /// `replace`.
    pub fn import_user(
        &self,
        user: &UserId,
        bytes: &[u8],
        replace: bool,
    ) -> Result<Imported, Error> {
        self.needs(Aggregate::Export)?;
        let e: UserExport = export::decode(bytes)?;
        if e.user.as_ref() != Some(user) {
            return Err(Error::InvalidArgument(format!(
                "the export is of user {}, not {user}; import it as that user",
                e.user.as_ref().map_or("?", |u| u.as_str())
            )));
        }
        let existed = self.store.user_exists(user)? || self.users.read().contains_key(user);
        if existed {
            if !replace {
                return Err(Error::AlreadyExists(format!(
                    "user {user} already has data on this server; import with replace \
                     (chaff user import --replace) to delete it first"
                )));
            }
            self.delete_user(user)?;
        }
        self.with_writer(user, |_, writer| {
            self.store.write_user_import(user, &e, 0)?;
            // The slot this lock belongs to was made empty; retire it so
            // the next request loads the imported user from storage.
            writer.retired = true;
            if let Some(gone) = self.users.write().remove(user) {
                self.cache.release(&gone.cache);
            }
            Ok(())
        })?;
        self.store.flush()?;
        Ok(Imported {
            messages: e.ledger.len() as u64,
            decisions: e.decisions.len() as u64,
            list_entries: e.lists.len() as u64,
            replaced: existed,
        })
    }
}
