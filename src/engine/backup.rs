//! Online backup (`Backup`, `chaff backup DIR`): a new data directory,
//! copied user by user while the server goes on serving.

use std::path::Path;

use super::Engine;
use crate::error::Error;
use crate::store::{Aggregate, Store, not_on};

/// sled page cache for the backup's own store: it only writes.
const BACKUP_CACHE_BYTES: u64 = 16 << 20;

/// What a backup copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackedUp {
    pub users: u64,
    pub records: u64,
}

impl Engine {
    /// Copies the store into `dir` (which must not exist, or be empty), a
    /// data directory `chaff serve --data DIR` serves as it is.
    ///
    /// The point a backup captures: every click acknowledged before the
    /// call started is in it (a click is acknowledged only after its batch
    /// is in the store, and the users to copy are listed after the start),
    /// and no click is half in it: each user is copied under that user's
    /// writer lock (their clicks wait for the copy, a few milliseconds;
    /// everyone else's go on), the operator's seed under the seed lock.
    /// Clicks made while the backup runs are in it whole or not at all.
    /// Copying a user loads their model into memory as a click would.
    ///
    /// On a store shared by replicas (Redis Cluster) the same holds, by
    /// other means: the store reads each user between two equal version
    /// stamps (`store::redis_cluster`'s `backup.rs`), and writes the same
    /// kind of sled directory, shared parts and consent ids included.
    pub fn backup_to(&self, dir: &Path) -> Result<BackedUp, Error> {
        if dir.exists()
            && std::fs::read_dir(dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(Error::InvalidArgument(format!(
                "backup directory {} exists and is not empty; name a new one",
                dir.display()
            )));
        }
        if !self.store.holds(Aggregate::Backup) {
            return Err(not_on(self.store.name(), Aggregate::Backup));
        }
        let Some(source) = self.store.sled() else {
            // A store shared by replicas (Redis Cluster): no writer lock
            // here orders its clicks, so the store reads each user
            // consistently itself and writes the same kind of directory.
            let dest = Store::open(dir, BACKUP_CACHE_BYTES)?;
            let (users, records) = self.store.backup_into(&dest)?;
            dest.flush()?;
            return Ok(BackedUp { users, records });
        };
        let dest = Store::open(dir, BACKUP_CACHE_BYTES)?;
        let users = source.list_users("", None, usize::MAX)?;
        let mut records = {
            let _seed = self.seed.lock();
            source.copy_operator_to(&dest)?
        };
        for user in &users {
            records += self.with_writer(user, |_, _| source.copy_user_to(user, &dest))?;
        }
        // Ids handed out after the copy (on the restored server) must be
        // above every id in it.
        source.carry_ids_to(&dest)?;
        dest.flush()?;
        Ok(BackedUp {
            users: users.len() as u64,
            records,
        })
    }
}
