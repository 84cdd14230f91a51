//! `chaff upgrade --store redis://…`: the ledger-format upgrade of a
//! cluster written before the undo window (session 10), whose ledger
//! values have the 18-byte header without the click time
//! (`window::is_legacy`).
//!
//! # Why this shape
//!
//! - **Every reader takes both layouts**, so a cluster needs no downtime:
//!   a server of this build serves an old cluster at once, and the upgrade
//!   runs beside it. An old entry reads as learned *now* (`click.lua`,
//!   `window::decode_stored`): its real time is unknown, and the safe side
//!   is the user's — a Forget or a flip of it stays exact (its tokens are
//!   in the entry), where a guessed old time would refuse the undo of a
//!   click made yesterday.
//! - **The upgrade stamps each old entry with the upgrade's time** and
//!   puts it in the undo window's time index (`upgrade.lua`), so it stays
//!   exactly undoable for one more window and is then folded like any
//!   click (delivered mail: dropped after its own window). Without the
//!   stamp an old entry would never fold: it would keep its tokens, and
//!   stay undoable, for ever.
//! - **Bounded, idempotent, resumable.** Every primary's keyspace is
//!   walked with `SCAN` (1,000 keys a step) for ledgers, each ledger with
//!   `HSCAN` (500 entries a step); only the old values' ids go to the
//!   script, which checks each value again on the shard, so an entry
//!   rewritten by a click meanwhile, or stamped by an earlier run, is left
//!   alone. A run cut short is simply run again. Each ledger's stamps are
//!   waited for (`WAIT`, `--redis-replicas`) before the next one.
//! - Journal records are not rewritten: they are read in either layout,
//!   and checkpoints fold them away.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::window::is_legacy;
use super::{Keys, RedisStore, array, bytes, corrupt, user_of_key};
use crate::error::Error;

/// The stamping script.
const UPGRADE: &str = concat!(
    include_str!("ledger_value.lua"),
    include_str!("upgrade.lua")
);

static UPGRADE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(UPGRADE));

/// Keys one `SCAN` step asks a primary for.
const SCAN_STEP: usize = 1000;
/// Ledger entries one `HSCAN` step reads (and one script call stamps, at
/// most).
const HSCAN_STEP: usize = 500;

/// How far an upgrade got: reported after every `SCAN` step, and at the
/// end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpgradeProgress {
    /// Primaries whose keyspace has been walked whole.
    pub primaries_done: usize,
    /// Primaries in the cluster when the upgrade started.
    pub primaries: usize,
    /// Ledgers (users', and the operator's seed) walked.
    pub ledgers: u64,
    /// Ledger entries read.
    pub entries: u64,
    /// Entries of the 18-byte layout found and stamped by this run.
    pub stamped: u64,
}

impl RedisStore {
    /// Stamps every ledger entry of the 18-byte layout in the cluster with
    /// the store's clock's now (the undo window's clock) and indexes it
    /// for the window (module docs). `progress` is called after every
    /// `SCAN` step of a primary. Safe beside serving replicas and to run
    /// again.
    pub async fn upgrade_ledgers(
        &self,
        mut progress: impl FnMut(&UpgradeProgress),
    ) -> Result<UpgradeProgress, Error> {
        let now_s = self.window.cutoffs().now_s;
        let time = u32::try_from(now_s).unwrap_or(u32::MAX);
        let primaries = self.primaries().await?;
        let mut done = UpgradeProgress {
            primaries: primaries.len(),
            ..UpgradeProgress::default()
        };
        for (host, port) in primaries {
            let mut cursor = "0".to_string();
            loop {
                let (next, keys) = self
                    .scan_step(
                        "an upgrade's scan",
                        (&host, port),
                        &cursor,
                        "{*}:l",
                        Some("hash"),
                        SCAN_STEP,
                    )
                    .await?;
                for key in keys {
                    let keys = if key == "{o}:l" {
                        Keys::operator()
                    } else if let Some(user) = user_of_key(&key) {
                        Keys::of(&user)
                    } else {
                        continue;
                    };
                    let (entries, stamped) = self.upgrade_ledger(&keys, time).await?;
                    done.ledgers += 1;
                    done.entries += entries;
                    done.stamped += stamped;
                }
                progress(&done);
                cursor = next;
                if cursor == "0" {
                    break;
                }
            }
            done.primaries_done += 1;
            progress(&done);
        }
        Ok(done)
    }

    /// One ledger, in `HSCAN` steps: the entries read, and those stamped.
    async fn upgrade_ledger(&self, keys: &Keys, time: u32) -> Result<(u64, u64), Error> {
        let (mut entries, mut stamped) = (0u64, 0u64);
        let mut cursor = "0".to_string();
        loop {
            let reply: Value = self
                .bounded("an upgrade's ledger read", async {
                    let mut conn = self.conn.clone();
                    Ok(redis::cmd("HSCAN")
                        .arg(&keys.ledger)
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(HSCAN_STEP)
                        .query_async(&mut conn)
                        .await?)
                })
                .await?;
            let [next, fields] = array(&reply, "HSCAN reply")? else {
                return Err(corrupt("HSCAN reply"));
            };
            let fields = array(fields, "HSCAN fields")?;
            let mut old = Vec::new();
            for pair in fields.chunks(2) {
                let [id, value] = pair else {
                    return Err(corrupt("HSCAN fields"));
                };
                entries += 1;
                if is_legacy(bytes(value, "ledger value")?) {
                    old.push(bytes(id, "ledger field")?.to_vec());
                }
            }
            if !old.is_empty() {
                let n: u64 = self
                    .bounded("an upgrade's stamp", async {
                        let mut call = UPGRADE_SCRIPT.prepare_invoke();
                        call.key(&keys.ledger)
                            .key(&keys.times)
                            .key(&keys.delivered_times)
                            .arg(&time.to_be_bytes()[..])
                            .arg(time)
                            .arg(if keys.seed { "0" } else { "1" });
                        for id in &old {
                            call.arg(&id[..]);
                        }
                        self.invoke(UPGRADE, &call).await
                    })
                    .await?;
                stamped += n;
            }
            cursor = String::from_utf8(bytes(next, "HSCAN cursor")?.to_vec())
                .map_err(|_| corrupt("HSCAN cursor"))?;
            if cursor == "0" {
                break;
            }
        }
        if stamped > 0 {
            self.wait_for(&keys.meta).await?;
        }
        Ok((entries, stamped))
    }
}
