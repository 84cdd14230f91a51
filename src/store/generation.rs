//! Damage to the data directory's files, as opposed to one record: found
//! at open (or on a read), named by file, never served as wrong counts.
//!
//! What sled 0.34 does with a damaged file (measured: `tests/corruption.rs`,
//! docs/FAULTS.md "Corruption"): a log message or blob file that fails its
//! CRC during recovery is taken for the torn tail of a crash. sled stops
//! there, zeroes the rest of the log and removes the blob files written
//! after it, and opens what came before: an *older* state, with no error.
//! Acknowledged clicks written after the damage are then gone, and a
//! user's model may be an older snapshot whose folded journal records were
//! already deleted: silently wrong counts.
//!
//! So chaff keeps its own record of what it last closed cleanly: a
//! generation number, written into the tree ([`GENERATION_KEY`]) and, once
//! that is on disk (flushed and fsynced), into a small file beside sled's
//! ([`FILE`], written atomically). At open the tree must hold at least the
//! file's generation; less means sled recovered to a state older than one
//! chaff saw on disk, and the open is refused ([`Error::Damaged`]) instead
//! of serving it. Sealed at every clean shutdown (`Engine::shutdown`) and
//! after `chaff repair`: nothing on the click or Score path.
//!
//! Not detected this way: damage to what was written after the last seal
//! when the process then crashed (the file still names the older
//! generation, which the tree holds). sled's own checksum failures that
//! surface later, on a read, are [`Error::Corrupt`] (DATA_LOSS), naming
//! the file (`store::error`).
//!
//! Before sled opens, chaff also checks the checksums of sled's `conf`
//! file (sled only logs a mismatch there and goes on) and of its newest
//! `snap.*` file (sled refuses one, but without naming it). A blob file
//! that is missing rather than damaged fails no checksum and cuts no log:
//! sled's own recovery, patched, refuses it, naming the file
//! (vendor/sled/PATCHES.md, `check_blob_files`).

use std::io::Write;
use std::path::{Path, PathBuf};

use sled::Tree;

use crate::error::Error;

/// The file beside sled's in the data directory that holds the last sealed
/// generation: `chaff-generation 1\n` and the number on the next line.
pub const FILE: &str = "chaff-generation";

/// The first line of [`FILE`] (its format, should it ever change).
const HEADER: &str = "chaff-generation 1";

/// The tree's copy of the generation (u64 BE).
pub(super) const GENERATION_KEY: &[u8] = b"C";

/// What to do about a damaged directory, said once in every such error.
pub const RESTORE: &str = "stop chaff and restore the data directory from a backup \
     (docs/OPERATIONS.md, \"Damaged data\")";

fn damaged(path: &Path, what: String) -> Error {
    Error::Damaged {
        path: path.to_path_buf(),
        what,
    }
}

/// The generation [`FILE`] records, if there is one.
fn recorded(dir: &Path) -> Result<Option<u64>, Error> {
    let file = dir.join(FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(damaged(
                dir,
                format!("{} cannot be read: {e}", file.display()),
            ));
        }
    };
    let mut lines = text.lines();
    match (
        lines.next(),
        lines.next().map(str::parse::<u64>),
        lines.next(),
    ) {
        (Some(HEADER), Some(Ok(n)), None) => Ok(Some(n)),
        _ => Err(damaged(
            dir,
            format!("{} is not a generation record: {text:?}", file.display()),
        )),
    }
}

/// The generation the tree holds (0: never sealed).
fn stored(tree: &Tree) -> Result<u64, Error> {
    match tree.get(GENERATION_KEY)? {
        None => Ok(0),
        Some(v) => Ok(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
            Error::Corrupt {
                what: format!("the generation record holds {} bytes, not 8", v.len()),
            }
        })?)),
    }
}

/// At open, once sled has recovered: refuses a tree older than the last
/// generation sealed in `dir`.
pub(super) fn check(dir: &Path, tree: &Tree) -> Result<(), Error> {
    let Some(want) = recorded(dir)? else {
        return Ok(());
    };
    let have = stored(tree)?;
    if have < want {
        return Err(damaged(
            dir,
            format!(
                "sled recovered an older state than chaff last closed cleanly (generation \
                 {have}; {FILE} says {want}): a file of it (sled's log db, or a blob file) \
                 was damaged or cut short and sled dropped the log from there, so \
                 acknowledged writes may be missing"
            ),
        ));
    }
    Ok(())
}

/// Records that everything written to `tree` so far is on disk, as a new
/// generation: in the tree, flushed and fsynced, then in [`FILE`]
/// (written to a temporary file, fsynced, renamed over it, the directory
/// fsynced). A crash between the two leaves the file one behind the tree,
/// which [`check`] accepts.
pub(super) fn seal(dir: &Path, db: &sled::Db, tree: &Tree) -> Result<u64, Error> {
    let next = stored(tree)?.max(recorded(dir)?.unwrap_or(0)) + 1;
    tree.insert(GENERATION_KEY, &next.to_be_bytes())?;
    db.flush()?;
    // sled's flush survives a process crash (sync_file_range); the file
    // must not claim what a power loss could take back.
    let io = |e: std::io::Error| Error::from(sled::Error::Io(e));
    std::fs::File::open(dir.join("db"))
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{HEADER}\n{next}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(FILE))?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(io)?;
    Ok(next)
}

/// sled's CRC-32 of a file's bytes: the same function sled uses for
/// `conf` and `snap.*` (crc32fast, plain).
fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Before sled opens `dir`: sled's `conf` (its bytes, then their CRC-32)
/// and its newest `snap.*` (bytes, length, CRC-32) must match their
/// checksums. A missing or empty `conf`
/// is sled's to recreate, a missing snapshot sled's to rebuild from the log.
pub(super) fn check_sled_files(dir: &Path) -> Result<(), Error> {
    let conf = dir.join("conf");
    if let Ok(bytes) = std::fs::read(&conf)
        && bytes.len() > 8
    {
        let (body, sum) = bytes.split_at(bytes.len() - 4);
        if sled_sum(sum) != crc32(body) {
            return Err(file_damaged(dir, &conf, "its checksum does not match"));
        }
    }
    if let Some(snap) = newest_snapshot(dir) {
        let bytes = std::fs::read(&snap)
            .map_err(|e| file_damaged(dir, &snap, &format!("it cannot be read: {e}")))?;
        let ok = bytes.len() > 12 && {
            let (body, tail) = bytes.split_at(bytes.len() - 12);
            sled_sum(&tail[8..]) == crc32(body)
        };
        if !ok {
            return Err(file_damaged(dir, &snap, "its checksum does not match"));
        }
    }
    Ok(())
}

/// sled stores its CRCs with `u32_to_arr` (little-endian).
fn sled_sum(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().unwrap_or([0; 4]))
}

fn newest_snapshot(dir: &Path) -> Option<PathBuf> {
    let mut snaps: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("snap.") && !n.ends_with(".generating"))
        })
        .collect();
    snaps.sort();
    snaps.pop()
}

fn file_damaged(dir: &Path, file: &Path, why: &str) -> Error {
    damaged(
        dir,
        format!("sled's file {} is damaged: {why}", file.display()),
    )
}

/// Which of sled's files a checksum failure that sled reports points at
/// (its `DiskPtr`): the log `db` at an offset, or a blob file.
pub(super) fn describe_sled_damage(at: Option<sled::DiskPtr>) -> String {
    match at {
        Some(sled::DiskPtr::Inline(offset)) => {
            format!("sled's log (file db) failed its checksum at offset {offset}")
        }
        Some(sled::DiskPtr::Blob(offset, blob)) => format!(
            "sled's blob file blobs/{blob} (named at offset {offset} of file db) failed its checksum"
        ),
        None => "sled's log (file db) does not hold what its page table (snap.*) says: \
                 it was cut short or damaged"
            .into(),
    }
}

/// A caught panic's message (sled panics with a `String` or a `&str`).
pub(super) fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)")
}
