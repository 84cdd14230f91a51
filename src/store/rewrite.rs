//! `chaff compact`: a stopped server's data directory written anew, record
//! for record, and swapped in atomically.
//!
//! # Why
//!
//! sled is log-structured: a rewritten record leaves its old version in the
//! log until the segment cleaner relocates the segment's live pages, which
//! it does only during later writes and only below half live; after
//! training stops, the files hold what was rewritten too, and a file never
//! shrinks below its high-water mark. Store format 7 rewrites a user's
//! ledger and dictionary after each prune (`compact.rs`), so a pruned
//! user's directory held 5× its live records (docs/PERFORMANCE.md, "Format
//! 7"). sled 0.34 has no setting that changes this (its
//! `segment_cleanup_threshold` is a no-op, the cleanup threshold a
//! constant; a patch making it a setting did not help, docs/PERFORMANCE.md
//! "`chaff compact`"). A fresh directory written from a scan of every tree
//! holds only what sled's own writing of it costs: 1.4–1.8× the live
//! records measured, against 4.5–5.7× for pruned users after training.
//! What `sa-learn --force-expire` or `bogoutil` are to their stores: an
//! operator's step with the server stopped.
//!
//! Since session 14 a clean close punches the log segments nothing points
//! to out of sled's file (vendor/sled/PATCHES.md), which gives `du` more
//! back than this rewrite does (23.6 against 31.3 bytes per model token
//! for the pruned user above); what this still does is make the file's
//! length match its content, for tools and quotas that count the length.
//!
//! # How, and why it is safe under SIGKILL at any point
//!
//! For a data directory `D` (siblings in the same parent directory, so the
//! renames are atomic):
//!
//! 1. `D` is opened as a [`Store`] (sled's lock: a running server makes this
//!    fail with [`Error::Locked`]; any format upgrade runs first), every tree
//!    is copied into a fresh sled database `D.compact-new`, flushed and
//!    closed; every other file of `D` (the API keys, `keys.json`) is
//!    copied beside it.
//! 2. `D.compact-new` is opened again and compared with `D`, tree by tree and
//!    record by record; then the marker file [`DONE_MARKER`] is written and
//!    synced into it. `D` is closed, and this process takes the lock of `D`'s
//!    log file itself (as sled does), so no server opens `D` during the swap.
//! 3. `D` is renamed `D.compact-old`, then `D.compact-new` renamed `D` (the
//!    parent directory synced after each), then `D.compact-old` removed,
//!    then the marker.
//!
//! [`recover`] runs before every open of a durable store (and before a
//! compaction) and settles whatever a kill left: `D` missing with a marked
//! `D.compact-new` → finish the swap; `D` missing otherwise → `D.compact-old`
//! goes back; `D` marked → remove `D.compact-old` and the marker; an
//! unmarked `D.compact-new` beside `D` → a copy never swapped in, removed.
//! So `D` always opens, holding either the original records or their
//! verified copy (`tests/compact.rs` kills the command at each step).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Store;
use crate::error::Error;

/// Written into the new directory once it has been verified: its presence
/// is what lets [`recover`] finish a swap rather than undo it.
pub const DONE_MARKER: &str = "chaff-compact-verified";

/// The copy writes each tree in this many interleaved passes (records 0,
/// 3, 6, … then 1, 4, 7, … then 2, 5, 8, …) rather than in key order: sled
/// then leaves a smaller directory, by measurement (docs/PERFORMANCE.md,
/// "`chaff compact`": SpamAssassin at the default cap 13.3 MB in key order,
/// 10.7 MB in three passes; trec06p 32.7–33.3 → 22.9 MB); 2, 4, 5 and 6
/// passes did worse than 3. Each pass reads the tree again. One insert
/// at a time: atomic batches (sled rolls its log buffer around each) left
/// 14.3–15.4 MB in the same passes. Nothing needs the copy to be atomic:
/// it counts only once verified whole.
const COPY_PASSES: usize = 3;

/// The copy is flushed after each this many bytes: sled reuses a log
/// segment the copy's own rewrites emptied only once what replaced its
/// pages is on disk, so without flushes a fast copy grows the file
/// instead (SpamAssassin at the default cap, debug build: 10.7–11.2 MB
/// never flushing, 10.1–12.8 MB flushing every 1,024 records, 9.6–10.1 MB
/// every 64–128 KiB; in a release build the copy outran sled more:
/// 11.2–15.9 MB without flushes).
const COPY_FLUSH_BYTES: u64 = 128 << 10;

/// Longest wait for sled's lock of `D`'s log file once the store is
/// closed: sled's background threads drop their handles a moment later.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A step of [`Store::rewrite_dir`], reported as it is reached (the
/// command prints each; a test build can stop at one, `fault.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewriteStep {
    /// Records copied so far (reported about once a second and at the end).
    Copied { records: u64, bytes: u64 },
    /// The copy reopened and found equal to the original, marker written.
    Verified { records: u64 },
    /// The original renamed aside; the copy not yet in its place.
    OriginalAside,
    /// The copy is the data directory; the original not yet removed.
    Swapped,
}

impl RewriteStep {
    /// A short name for the step (logs, the test build's stop).
    pub fn name(&self) -> &'static str {
        match self {
            RewriteStep::Copied { .. } => "copied",
            RewriteStep::Verified { .. } => "verified",
            RewriteStep::OriginalAside => "original-aside",
            RewriteStep::Swapped => "swapped",
        }
    }
}

/// What [`Store::rewrite_dir`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rewritten {
    /// Records copied (every tree).
    pub records: u64,
    /// Their key and value bytes.
    pub bytes: u64,
    /// The directory's size on disk (allocated blocks, as `du`) before and after.
    pub disk_before: u64,
    pub disk_after: u64,
}

/// What [`recover`] found and did about an interrupted compaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// The verified copy was put in place (or its leftovers removed).
    Finished,
    /// The original was put back; an unfinished copy removed.
    RolledBack,
}

/// `D.compact-old` and `D.compact-new` beside `dir` (None for a path with
/// no last component, such as `/`).
fn siblings(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    let beside = |suffix: &str| {
        let n = format!("{name}.{suffix}");
        parent.map_or_else(|| PathBuf::from(&n), |p| p.join(&n))
    };
    Some((beside("compact-old"), beside("compact-new")))
}

fn io(e: std::io::Error) -> Error {
    Error::from(sled::Error::Io(e))
}

/// Makes renames and removals in `dir`'s parent durable.
fn sync_parent(dir: &Path) -> Result<(), Error> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|f| f.sync_all())
        .map_err(io)
}

/// Settles a compaction of `dir` that a crash interrupted (see the module
/// docs); `None` when there was none. Idempotent: a crash inside it leaves
/// a state it settles the same way. Runs before every open of a durable
/// store.
pub fn recover(dir: &Path) -> Result<Option<Recovered>, Error> {
    let Some((old, new)) = siblings(dir) else {
        return Ok(None);
    };
    let (has_old, has_new) = (old.exists(), new.exists());
    if !dir.exists() {
        if !has_old {
            return Ok(None);
        }
        if has_new && new.join(DONE_MARKER).exists() {
            std::fs::rename(&new, dir).map_err(io)?;
            sync_parent(dir)?;
            finish(dir, &old)?;
            tracing::warn!(dir = %dir.display(), "an interrupted `chaff compact` was finished: the verified copy is in place");
            return Ok(Some(Recovered::Finished));
        }
        std::fs::rename(&old, dir).map_err(io)?;
        sync_parent(dir)?;
        if has_new {
            std::fs::remove_dir_all(&new).map_err(io)?;
        }
        tracing::warn!(dir = %dir.display(), "an interrupted `chaff compact` was undone: the original is back");
        return Ok(Some(Recovered::RolledBack));
    }
    if dir.join(DONE_MARKER).exists() {
        finish(dir, &old)?;
        return Ok(Some(Recovered::Finished));
    }
    if has_new {
        // A copy that was never swapped in: the directory is the original.
        std::fs::remove_dir_all(&new).map_err(io)?;
        return Ok(Some(Recovered::RolledBack));
    }
    if has_old {
        tracing::warn!(
            dir = %dir.display(),
            old = %old.display(),
            "a directory named like an interrupted `chaff compact`'s original lies beside the data directory, which is not marked as its copy: left alone"
        );
    }
    Ok(None)
}

/// The last steps of a swap: the original removed, then the marker.
fn finish(dir: &Path, old: &Path) -> Result<(), Error> {
    if old.exists() {
        std::fs::remove_dir_all(old).map_err(io)?;
    }
    std::fs::remove_file(dir.join(DONE_MARKER)).map_err(io)?;
    sync_parent(dir)
}

/// Bytes allocated to the files under `dir` (what `du -s -B1` counts).
pub fn disk_usage(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += disk_usage(&entry.path())?;
        }
    }
    Ok(total)
}

/// sled's own lock of the log file (`flock`, exclusive, as sled takes it),
/// waited for up to [`LOCK_WAIT`].
fn lock_log(dir: &Path) -> Result<std::fs::File, Error> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("db"))
        .map_err(io)?;
    let started = Instant::now();
    loop {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        if started.elapsed() > LOCK_WAIT {
            return Err(Error::Locked {
                path: dir.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn open_plain(dir: &Path, cache_bytes: u64) -> Result<sled::Db, Error> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        .open()
        .map_err(|source| Error::Open {
            path: dir.to_path_buf(),
            source: source.into(),
        })
}

/// sled's own entries in a data directory: its configuration, log, blob
/// files and page-table snapshots. The copy writes its own.
fn is_sleds(name: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap.")
}

/// Copies every entry of `dir` that is not sled's (see [`is_sleds`]) into
/// `to`, directories whole, each file synced; returns how many files.
fn copy_other_files(dir: &Path, to: &Path) -> Result<u64, Error> {
    fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
        if from.is_dir() {
            std::fs::create_dir_all(to)?;
            let mut n = 0;
            for entry in std::fs::read_dir(from)? {
                let entry = entry?;
                n += copy_tree(&entry.path(), &to.join(entry.file_name()))?;
            }
            std::fs::File::open(to)?.sync_all()?;
            Ok(n)
        } else {
            std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()?;
            Ok(1)
        }
    }
    let mut copied = 0;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if is_sleds(&name.to_string_lossy()) {
            continue;
        }
        copied += copy_tree(&entry.path(), &to.join(&name)).map_err(io)?;
    }
    Ok(copied)
}

/// Every tree of `from` compared with `to`'s, record by record.
fn verify(from: &sled::Db, to: &sled::Db) -> Result<u64, Error> {
    let mut names = from.tree_names();
    let mut theirs = to.tree_names();
    names.sort();
    theirs.sort();
    if names != theirs {
        return Err(Error::Corrupt {
            what: "the compacted copy has other trees than the original".into(),
        });
    }
    let mut records = 0;
    for name in names {
        let (a, b) = (from.open_tree(&name)?, to.open_tree(&name)?);
        let mut b_iter = b.iter();
        for item in a.iter() {
            let (k, v) = item?;
            match b_iter.next().transpose()? {
                Some((k2, v2)) if k2 == k && v2 == v => records += 1,
                _ => {
                    return Err(Error::Corrupt {
                        what: format!(
                            "the compacted copy differs from the original at record {records}"
                        ),
                    });
                }
            }
        }
        if b_iter.next().is_some() {
            return Err(Error::Corrupt {
                what: "the compacted copy has more records than the original".into(),
            });
        }
    }
    Ok(records)
}

impl Store {
    /// Rewrites the (stopped) data directory `dir` into a fresh one and
    /// swaps it in (module docs), calling `progress` at each step. The
    /// records are the same, byte for byte; only sled's files shrink.
    pub fn rewrite_dir(
        dir: &Path,
        cache_bytes: u64,
        progress: &mut dyn FnMut(RewriteStep),
    ) -> Result<Rewritten, Error> {
        recover(dir)?;
        let (old, new) = siblings(dir).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "give the data directory by its name, not {}",
                dir.display()
            ))
        })?;
        let disk_before = disk_usage(dir).map_err(io)?;
        let store = Store::open(dir, cache_bytes)?;
        let mut step = |s: RewriteStep| {
            progress(s);
            #[cfg(feature = "fault-injection")]
            crate::fault::stop_at(s.name());
        };

        let (mut records, mut bytes) = (0u64, 0u64);
        {
            let copy = open_plain(&new, cache_bytes)?;
            let mut reported = Instant::now();
            let mut flushed_at = 0u64;
            for name in store.db.tree_names() {
                let (from, to) = (store.db.open_tree(&name)?, copy.open_tree(&name)?);
                // In COPY_PASSES interleaved passes, not in key order
                // (see COPY_PASSES).
                for pass in 0..COPY_PASSES {
                    for (i, item) in from.iter().enumerate() {
                        if i % COPY_PASSES != pass {
                            continue;
                        }
                        let (k, v) = item?;
                        bytes += (k.len() + v.len()) as u64;
                        to.insert(k, v)?;
                        records += 1;
                        if bytes - flushed_at >= COPY_FLUSH_BYTES {
                            copy.flush()?;
                            flushed_at = bytes;
                        }
                        if reported.elapsed() >= Duration::from_secs(1) {
                            step(RewriteStep::Copied { records, bytes });
                            reported = Instant::now();
                        }
                    }
                }
            }
            copy.flush()?;
            step(RewriteStep::Copied { records, bytes });
        }
        // What else lives in the directory (the API keys, `keys.json`, and
        // any file an operator put there) goes along, byte for byte.
        let others = copy_other_files(dir, &new)?;
        // Closed (sled removes replaced blobs at close; its threads let go
        // of the lock a moment after the drop), then read back.
        drop(lock_log(&new)?);
        let copy = open_plain(&new, cache_bytes)?;
        let verified = verify(&store.db, &copy)?;
        drop(copy);
        drop(store);
        // sled's threads let go of the copy's lock a moment after the drop;
        // taking it here also waits for that.
        drop(lock_log(&new)?);
        let marker = new.join(DONE_MARKER);
        std::fs::write(
            &marker,
            format!("{verified} records, {others} other files\n"),
        )
        .and_then(|()| std::fs::File::open(&marker)?.sync_all())
        .and_then(|()| std::fs::File::open(&new)?.sync_all())
        .map_err(io)?;
        step(RewriteStep::Verified { records: verified });

        // Held through the renames (a lock follows the file, not its
        // name): a server started now waits for it or fails as Locked.
        let lock = lock_log(dir)?;
        std::fs::rename(dir, &old).map_err(io)?;
        sync_parent(dir)?;
        step(RewriteStep::OriginalAside);
        std::fs::rename(&new, dir).map_err(io)?;
        sync_parent(dir)?;
        step(RewriteStep::Swapped);
        finish(dir, &old)?;
        drop(lock);
        Ok(Rewritten {
            records,
            bytes,
            disk_before,
            disk_after: disk_usage(dir).map_err(io)?,
        })
    }
}
