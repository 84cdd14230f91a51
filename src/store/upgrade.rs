//! The upgrades at open that visit every user: format 6 to 7 (each user
//! compacted, `compact.rs`) and 7 to 8 (each user checkpointed with all
//! their ham counted as delivered). [`Store::open`] decides which run.
//!
//! # One damaged user does not stop them
//!
//! A user whose records do not read back ([`Error::Corrupt`]) is left as
//! they were, with a WARN naming them and `chaff repair --user`; the
//! upgrade goes on and the directory opens. Aborting instead kept every
//! user's mail filtering down for one damaged record, and `chaff repair`,
//! which opens the store first, could not run either. Any other error (an
//! I/O failure, a full disk) still aborts the open: it is not one user's.
//!
//! # Progress
//!
//! A provider's directory holds tens of thousands of users, and these
//! upgrades take minutes there (docs/OPERATIONS.md, "Store format 8"):
//! between the start and finish lines an INFO line says how far it got
//! at most every [`PROGRESS_EVERY`], never one per user.

use std::path::Path;
use std::time::{Duration, Instant};

use super::keys::FORMAT_KEY;
use super::writes::Writes;
use super::{FORMAT_7, FORMAT_VERSION, Store};
use crate::error::Error;
use crate::types::UserId;

/// Users upgraded between flushes: a flush costs 0.5–3 ms here, a small
/// user's compaction about as much. Progress survives a crash: a restart
/// skips these users quickly (nothing left to change) instead of redoing
/// them.
const UPGRADE_FLUSH_USERS: usize = 64;

/// How often a running upgrade logs how far it got: often enough that an
/// operator watching a start-up of minutes sees it move, rarely enough
/// that a directory of 100,000 users logs a few dozen lines, not 100,000.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// When an upgrade's next progress line is due.
struct Progress {
    started: Instant,
    next: Instant,
    every: Duration,
}

impl Progress {
    fn new(started: Instant, every: Duration) -> Self {
        Self {
            started,
            next: started + every,
            every,
        }
    }

    /// Whether a progress line is due at `now`; if so, the next one is due
    /// a whole interval later (however late this one came).
    fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.every;
        true
    }
}

/// An upgrade's failure at open, as the open returns it: damage the
/// upgrade could not step around (a record of the directory's own, not a
/// user's) names the directory and the format it was upgrading from;
/// anything else (a full disk, an I/O failure) stays what it is, so the
/// operator reads its remedy, not "restore from backup" (as a full disk
/// during an upgrade read before session 16). Logged with that context
/// either way.
pub(super) fn failed(path: &Path, from: u32, e: Error) -> Error {
    tracing::error!(
        "upgrading data directory {} from format {from} failed: {e}",
        path.display()
    );
    match e {
        Error::Corrupt { what } => Error::Corrupt {
            what: format!(
                "upgrading data directory {} from format {from}: {what}",
                path.display()
            ),
        },
        other => other,
    }
}

impl<W: Writes> Store<W> {
    /// Format 7 to 8: every user with a model checkpointed with all their
    /// ham counted as delivered (format 7 did not keep the split), then
    /// `F` rewritten and flushed (see [`FORMAT_7`]). Each user's snapshot
    /// folds their whole journal, so no record without the delivered mark
    /// is left to replay after a format-8 snapshot.
    pub(super) fn upgrade_format_7(&self) -> Result<(), Error> {
        let users = self.users_with_models()?;
        tracing::info!(
            users = users.len(),
            "upgrading data directory from format 7 to {FORMAT_VERSION}"
        );
        let mut ham_weight = 0u64;
        // A damaged model's user fails their requests as they did in
        // format 7, naming the record; `chaff repair` rebuilds it from the
        // ledger with the delivered marks.
        let damaged = self.upgrade_each_user(
            FORMAT_VERSION,
            &users,
            "this user's model does not read back and was left as it was",
            |user| {
                ham_weight += self.checkpoint_all_delivered(user)?;
                Ok(())
            },
        )?;
        self.tree()?
            .insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
        self.tree()?.flush()?;
        tracing::info!(
            users = users.len(),
            damaged,
            ham_weight,
            "upgraded data directory from format 7 to {FORMAT_VERSION}: all ham learned so far counts as delivered"
        );
        Ok(())
    }

    /// Format 6 to 7: every user with a dictionary compacted, then `F`
    /// rewritten and flushed (see `READABLE_FORMATS`). A user whose records
    /// do not read back keeps them as they were, uncompacted: format 7
    /// reads an uncompacted user as format 6 did (compaction only drops
    /// ids nothing needs), and `F` is not held back for them, so the
    /// directory opens and `chaff repair` can run.
    pub(super) fn upgrade_format_6(&self) -> Result<(), Error> {
        let users = self.users_with_dicts()?;
        // Logged before the work, so an operator (and the crash soak) can
        // tell a start-up that is upgrading from one that hangs.
        tracing::info!(
            users = users.len(),
            "upgrading data directory from format 6 to {FORMAT_7}"
        );
        let (mut before, mut after) = (0usize, 0usize);
        let damaged = self.upgrade_each_user(
            FORMAT_7,
            &users,
            "this user's records do not read back and were left as they were, not compacted",
            |user| {
                let done = self.compact_user(user)?;
                before += done.dict_before;
                after += done.dict_after;
                Ok(())
            },
        )?;
        self.tree()?.insert(FORMAT_KEY, &FORMAT_7.to_be_bytes())?;
        self.tree()?.flush()?;
        tracing::info!(
            users = users.len(),
            damaged,
            dictionary_before = before,
            dictionary_after = after,
            "upgraded data directory from format 6 to {FORMAT_7}"
        );
        Ok(())
    }

    /// Runs one user's step of the upgrade to format `to` for each of
    /// `users`, flushing every [`UPGRADE_FLUSH_USERS`] and logging progress
    /// every [`PROGRESS_EVERY`]. A user whose step fails with
    /// [`Error::Corrupt`] is skipped with a WARN (`left`: what became of
    /// them) naming `chaff repair --user`; any other error is returned.
    /// Returns how many users were skipped.
    fn upgrade_each_user(
        &self,
        to: u32,
        users: &[UserId],
        left: &str,
        mut step: impl FnMut(&UserId) -> Result<(), Error>,
    ) -> Result<usize, Error> {
        let mut progress = Progress::new(Instant::now(), PROGRESS_EVERY);
        let mut damaged = 0usize;
        for (i, user) in users.iter().enumerate() {
            match step(user) {
                Ok(()) => {}
                Err(e @ Error::Corrupt { .. }) => {
                    damaged += 1;
                    let id = user.as_str();
                    tracing::warn!(
                        user = id,
                        error = %e,
                        "format {to} upgrade: {left}; run `chaff repair --user {id:?}` (a damaged ledger entry or dictionary needs the backup the error names)"
                    );
                }
                Err(e) => return Err(e),
            }
            if i % UPGRADE_FLUSH_USERS == UPGRADE_FLUSH_USERS - 1 {
                self.flush()?;
            }
            if progress.due(Instant::now()) {
                let elapsed = progress.started.elapsed().as_secs_f64();
                // Not the start and finish lines' words: the crash soak
                // tells a finished upgrade by its finish line.
                tracing::info!(
                    done = i + 1,
                    users = users.len(),
                    damaged,
                    elapsed_s = format!("{elapsed:.1}"),
                    "format {to} upgrade: {} of {} users done in {elapsed:.1} s",
                    i + 1,
                    users.len()
                );
            }
        }
        Ok(damaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_s_full_disk_stays_a_full_disk_and_damage_names_the_directory() {
        let dir = Path::new("/srv/chaff");
        assert!(matches!(failed(dir, 6, Error::DiskFull), Error::DiskFull));
        let io = Error::from(sled::Error::Io(std::io::Error::other("EIO")));
        assert!(matches!(failed(dir, 7, io), Error::Storage(_)));
        let damaged = Error::Corrupt {
            what: "the format key".into(),
        };
        match failed(dir, 6, damaged) {
            Error::Corrupt { what } => assert_eq!(
                what,
                "upgrading data directory /srv/chaff from format 6: the format key"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn progress_is_due_once_per_interval_however_many_users_pass_between() {
        let start = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Progress::new(start, 5 * s);
        assert!(!p.due(start), "not at the start");
        assert!(!p.due(start + 4 * s));
        assert!(p.due(start + 5 * s));
        assert!(!p.due(start + 5 * s), "not twice for the same moment");
        assert!(!p.due(start + 9 * s));
        // Late (a slow user): the next is an interval after this one.
        assert!(p.due(start + 12 * s));
        assert!(!p.due(start + 16 * s));
        assert!(p.due(start + 17 * s));
    }
}
