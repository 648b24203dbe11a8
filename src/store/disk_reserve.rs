//! The space the embedded engine keeps free on its disk. sled cannot recover
//! in-process from a write or sync that failed for want of space (it keeps the
//! error for the life of the handle, and after a failed fdatasync nothing
//! written since the last good one can be promised), so the writer refuses new
//! writes while less than the reserve is free, and takes them again by itself
//! once space returns.

use std::path::PathBuf;

use super::StoreError;

const MIB: u64 = 1024 * 1024;

pub struct DiskReserve {
    dir: PathBuf,
    min_free_bytes: u64,
}

impl DiskReserve {
    pub fn new(dir: PathBuf, min_free_bytes: u64) -> DiskReserve {
        DiskReserve {
            dir,
            min_free_bytes,
        }
    }

    /// No reserve: every write is attempted.
    pub fn none() -> DiskReserve {
        DiskReserve::new(PathBuf::new(), 0)
    }

    /// `DiskFull` while less than the reserve is free. A disk whose free space
    /// cannot be read passes: the write itself then says what is wrong.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        match self.free_bytes() {
            Ok(free) if free < self.min_free_bytes => Err(StoreError::DiskFull {
                free_mib: free / MIB,
                reserve_mib: self.min_free_bytes.div_ceil(MIB),
            }),
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, dir = %self.dir.display(), "could not read the free space of the store's disk");
                Ok(())
            }
        }
    }

    /// Bytes an unprivileged process may still write on the store's file system.
    fn free_bytes(&self) -> nix::Result<u64> {
        let stats = nix::sys::statvfs::statvfs(&self.dir)?;
        Ok(stats
            .blocks_available()
            .saturating_mul(stats.fragment_size()))
    }
}
