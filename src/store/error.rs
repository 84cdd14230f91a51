//! The storage engine's failures as the rest of the library sees them: an
//! opaque [`StorageError`] that says what failed without naming the engine,
//! so that only `store` names sled.

use std::fmt;

use crate::error::Error;

/// A failure of the storage engine (I/O, a damaged log, ...).
#[derive(Debug)]
pub struct StorageError(sled::Error);

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        Self(e)
    }
}

/// The conversion at the boundary: store code uses `?` on sled's results.
/// A full disk is told apart here, the one place storage errors are
/// classified, so people read "the data directory's disk is full".
impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        if is_disk_full(&e) {
            Error::DiskFull
        } else {
            Error::Storage(StorageError(e))
        }
    }
}

/// ENOSPC (and EDQUOT): sled passes I/O errors on as they are, or, once
/// it has stored one as its global error, as a copy that keeps the kind.
pub(crate) fn is_disk_full(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::StorageFull
                || io.kind() == std::io::ErrorKind::QuotaExceeded
                || matches!(io.raw_os_error(), Some(28 | 122))
        }
        _ => false,
    }
}
