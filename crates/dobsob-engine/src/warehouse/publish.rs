//! Publishing the warehouse analysts open: dobsob works in a private working database
//! (`<data>/work/warehouse.duckdb`) and publishes it as `<data>/warehouse.duckdb` by checkpoint, copy (a
//! reflink clone where the filesystem can, a plain copy otherwise), fsync and rename.
//!
//! Why: DuckDB lets a file have one read-write process or any number of read-only ones, never both. A sync
//! that wrote the analysts' file would lock every analyst out for hours, and an analyst's open notebook would
//! make the sync fail. The working database is only ever opened by dobsob; the published file is only ever
//! replaced by rename, never opened by dobsob for writing. A reader that already has the published file
//! open keeps reading the snapshot it opened (Linux keeps the old inode alive), the next open sees the new
//! one, and nobody sees a half-written file: the copy is complete and synced before the rename.
//!
//! The published file is made read-only (0400, or 0440 for a share group: `share.rs`), so an analyst cannot
//! open it read-write by mistake without being root (root can: the next publish replaces the file, and the
//! WAL handling below keeps root's writes out of the next snapshot); and any `warehouse.duckdb.wal` beside it (DuckDB finds a WAL by name) is removed around the
//! rename, so a WAL from somebody's read-write session can never be replayed into a newer snapshot.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Context, Sharing, Warehouse, WarehouseError};

/// What a publish did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Published {
    pub bytes: u64,
    pub seconds: f64,
    /// Whether the copy was a reflink (copy-on-write clone: no data copied).
    pub reflink: bool,
}

/// The temporary file a publish writes before the rename (in the same directory, so the rename is atomic).
pub fn publishing_path(target: &Path) -> PathBuf {
    hidden_beside(target, "publishing")
}

/// `.NAME.SUFFIX` beside `path`: where a new version of a file is written before it is renamed over it.
pub(super) fn hidden_beside(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "warehouse.duckdb".into());
    path.with_file_name(format!(".{name}.{suffix}"))
}

/// The WAL DuckDB finds beside a database file, by name.
pub fn wal_of(target: &Path) -> PathBuf {
    let mut s = target.as_os_str().to_owned();
    s.push(".wal");
    PathBuf::from(s)
}

impl Warehouse {
    /// Publishes this (working) warehouse as `target`: checkpoint, copy, fsync, rename. Runs on the writer
    /// thread, so no merge writes while the file is copied.
    pub fn publish(&mut self, target: &Path) -> Result<Published, WarehouseError> {
        let started = Instant::now();
        let r = self.publish_to(target, started);
        self.timings.publish_s += started.elapsed().as_secs_f64();
        r
    }

    fn publish_to(&self, target: &Path, started: Instant) -> Result<Published, WarehouseError> {
        self.raw
            .conn
            .execute_batch("CHECKPOINT")
            .ctx(|| "CHECKPOINT before publishing".into())?;
        let io = |what: &str, e: io::Error| {
            WarehouseError::State(format!(
                "publishing {} as {}: {what}: {e}",
                self.path.display(),
                target.display()
            ))
        };
        let tmp = publishing_path(target);
        let reflink = clone_or_copy(&self.path, &tmp).map_err(|e| io("copying", e))?;
        let bytes = std::fs::metadata(&tmp)
            .map_err(|e| io("reading the copy", e))?
            .len();
        self.sharing()
            .apply_to_snapshot(&tmp)
            .map_err(|e| io("making the copy read-only", e))?;
        if let (Sharing::Group { .. }, Some(dir)) = (self.sharing(), target.parent()) {
            // Every publish, so that a chmod by hand or a moved directory does not lock the team out.
            self.sharing()
                .apply_to_data_dir(dir)
                .map_err(|e| io("opening the data directory to the share group", e))?;
        }
        remove_if_there(&wal_of(target)).map_err(|e| io("removing a stale .wal", e))?;
        std::fs::rename(&tmp, target).map_err(|e| io("renaming the copy into place", e))?;
        if let Some(dir) = target.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("syncing the directory", e))?;
        }
        remove_if_there(&wal_of(target)).map_err(|e| io("removing a stale .wal", e))?;
        let p = Published {
            bytes,
            seconds: started.elapsed().as_secs_f64(),
            reflink,
        };
        tracing::info!(
            bytes = p.bytes,
            reflink = p.reflink,
            "published {} in {:.2}s",
            target.display(),
            p.seconds
        );
        Ok(p)
    }
}

fn remove_if_there(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Copies `src` to a new `dst` (replacing a leftover one), synced to disk. Tries a reflink first (Linux
/// FICLONE: btrfs, XFS, bcachefs, ...); returns whether it was one.
fn clone_or_copy(src: &Path, dst: &Path) -> io::Result<bool> {
    remove_if_there(dst)?;
    let mut from = File::open(src)?;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut to = o.open(dst)?;
    let cloned = reflink(&from, &to);
    if !cloned {
        // std's copy uses copy_file_range on Linux: in-kernel, and shared extents where the filesystem can.
        io::copy(&mut from, &mut to)?;
    }
    to.sync_all()?;
    Ok(cloned)
}

#[cfg(target_os = "linux")]
fn reflink(from: &File, to: &File) -> bool {
    use std::os::fd::AsRawFd;
    // FICLONE = _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn reflink(_from: &File, _to: &File) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_beside_the_target() {
        let t = Path::new("/d/warehouse.duckdb");
        assert_eq!(
            publishing_path(t),
            PathBuf::from("/d/.warehouse.duckdb.publishing")
        );
        assert_eq!(wal_of(t), PathBuf::from("/d/warehouse.duckdb.wal"));
    }

    #[test]
    fn a_copy_is_complete_private_then_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a");
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &body).unwrap();
        let dst = dir.path().join("b");
        std::fs::write(&dst, b"leftover of a killed publish").unwrap();
        clone_or_copy(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), body);
        Sharing::Private.apply_to_snapshot(&dst).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o400);
        }
    }
}
