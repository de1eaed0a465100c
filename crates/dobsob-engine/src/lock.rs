//! One run at a time per data directory: `sync` and `rebuild` hold an OS file lock (`flock`) on
//! `<data-dir>/dobsob.lock` for their whole length. The kernel releases it when the process dies, however it
//! dies, so no stale lock survives a crash. The file holds the holder's pid and start time, for the message
//! the next run prints.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// The held lock; dropping it (or the process ending) releases it.
pub struct RunLock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another dobsob run holds {path} ({holder}); it is still running. Wait for it, or check `dobsob status`"
    )]
    Held { path: String, holder: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl RunLock {
    /// Takes the lock on `data_dir`, or says who holds it.
    pub fn acquire(data_dir: &Path) -> Result<RunLock, LockError> {
        let path = data_dir.join("dobsob.lock");
        let p = path.display().to_string();
        let io = |source| LockError::Io {
            path: p.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a file descriptor this function owns; no memory is shared with the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Held {
                    path: p,
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            return Err(io(err));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(
            file,
            "pid {}, started {}",
            std::process::id(),
            crate::ledger::now()
        )
        .map_err(io)?;
        file.flush().map_err(io)?;
        Ok(RunLock { _file: file })
    }
}

/// Whether a run holds a data directory, seen without taking its lock and without writing anything.
pub enum Peek {
    /// No run holds it. While the caller keeps this shared lock (if there is a lock file), a run that starts
    /// finds the directory busy and exits 75, as with any other run: what the caller reads stays still.
    Free(Option<File>),
    /// A run holds it now.
    Held,
}

/// Looks at `data_dir`'s lock with a shared, non-blocking `flock` on the existing lock file (none: free).
pub fn peek(data_dir: &Path) -> Peek {
    let Ok(file) = File::open(data_dir.join("dobsob.lock")) else {
        return Peek::Free(None);
    };
    // SAFETY: flock on a file descriptor this function owns; no memory is shared with the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        Peek::Free(Some(file))
    } else {
        Peek::Held
    }
}

/// What the lock file says of its last holder ("pid 4242, started ..."), if anything.
pub fn holder(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join("dobsob.lock"))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Whether a run holds `data_dir` now, seen without taking any lock (a look that took one, even shared,
/// could make a run starting that instant find the directory busy): on Linux from `/proc/locks`, the
/// kernel's list of `flock` locks by device and inode; elsewhere (or without /proc) by a [`peek`].
pub fn is_held(data_dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(data_dir.join("dobsob.lock")) else {
        return false;
    };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return matches!(peek(data_dir), Peek::Held);
    };
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let inode = meta.ino();
    locks.lines().any(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF" (a waiter's line has "->" after the number).
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(i) = f.iter().position(|w| *w == "FLOCK") else {
            return false;
        };
        if f.get(i + 2) != Some(&"WRITE") {
            return false;
        }
        let Some(id) = f.get(i + 4) else {
            return false;
        };
        let mut parts = id.split(':');
        let (Some(ma), Some(mi), Some(ino)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        u32::from_str_radix(ma, 16).ok() == Some(major)
            && u32::from_str_radix(mi, 16).ok() == Some(minor)
            && ino.parse::<u64>().ok() == Some(inode)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peek_sees_a_holder_and_holds_a_starting_run_off_while_it_looks() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(peek(dir.path()), Peek::Free(None)));
        assert!(!is_held(dir.path()));
        let run = RunLock::acquire(dir.path()).unwrap();
        assert!(matches!(peek(dir.path()), Peek::Held));
        assert!(
            is_held(dir.path()),
            "{}",
            std::fs::read_to_string("/proc/locks").unwrap_or_default()
        );
        drop(run);
        assert!(!is_held(dir.path()));
        let looking = peek(dir.path());
        assert!(matches!(looking, Peek::Free(Some(_))));
        assert!(
            RunLock::acquire(dir.path()).is_err(),
            "a run waits for the look"
        );
        drop(looking);
        assert!(RunLock::acquire(dir.path()).is_ok());
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in this process conflicts too.
        let e = RunLock::acquire(dir.path()).err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        assert!(RunLock::acquire(dir.path()).is_ok());
    }
}
