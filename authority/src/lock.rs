//! [`DirectoryLock`]: who may use an authority directory at the same time. Every process that
//! opens the authority (`aip-ca serve`, any number of them) holds a shared lock on
//! `DIR/aip.lock` while it runs; a command that rewrites the directory's keys offline
//! (`aip-ca ca renew-issuing`) takes it exclusively, so it never runs beside a server, and
//! a server does not start in the middle of it.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{AuthorityError, io};

/// The lock file in an authority directory.
pub const LOCK_FILE: &str = "aip.lock";

/// A held lock on an authority directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirectoryLock {
    _file: File,
}

impl DirectoryLock {
    fn open(dir: &Path) -> Result<(File, PathBuf), AuthorityError> {
        let path = dir.join(LOCK_FILE);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(io(&path))?;
        Ok((file, path))
    }

    /// A shared lock, as a running authority holds it: refused while an offline command holds
    /// the directory.
    pub fn shared(dir: &Path) -> Result<Self, AuthorityError> {
        let (file, path) = Self::open(dir)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(AuthorityError::InUse(format!(
                "{} is being changed by an offline command (aip-ca ca renew-issuing); start the server once it is done",
                dir.display()
            ))),
            Err(TryLockError::Error(e)) => Err(io(&path)(e)),
        }
    }

    /// An exclusive lock, for a command that rewrites the directory: refused while a server
    /// (or another such command) uses it.
    pub fn exclusive(dir: &Path) -> Result<Self, AuthorityError> {
        let (file, path) = Self::open(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(AuthorityError::InUse(format!(
                "the authority in {} is running (aip-ca serve holds it) or being changed; stop it first",
                dir.display()
            ))),
            Err(TryLockError::Error(e)) => Err(io(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_coexist_and_exclude_an_exclusive_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirectoryLock::shared(dir.path()).unwrap();
        let second = DirectoryLock::shared(dir.path()).unwrap();
        let refused = DirectoryLock::exclusive(dir.path()).unwrap_err();
        assert!(matches!(refused, AuthorityError::InUse(_)), "{refused}");
        drop((first, second));
        let exclusive = DirectoryLock::exclusive(dir.path()).unwrap();
        assert!(matches!(
            DirectoryLock::shared(dir.path()),
            Err(AuthorityError::InUse(_))
        ));
        assert!(matches!(
            DirectoryLock::exclusive(dir.path()),
            Err(AuthorityError::InUse(_))
        ));
        drop(exclusive);
        DirectoryLock::shared(dir.path()).unwrap();
    }
}
