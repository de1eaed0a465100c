//! The data directory's old layout (one warehouse file that analysts and the sync shared) adopted as the
//! working database on the first run of this dobsob.

use super::*;

/// A data directory written before the working database existed has its warehouse at the published path:
/// that file becomes the working database (with its WAL), without a reload. A leftover of a publish that was
/// killed is removed.
pub(super) fn adopt_old_layout(working: &Path, published: &Path) -> Result<(), Error> {
    let tmp = crate::warehouse::publishing_path(published);
    if tmp.exists() {
        tracing::info!(
            "removing {}, left by a publish that did not finish",
            tmp.display()
        );
        std::fs::remove_file(&tmp)
            .map_err(|e| Error::Io(format!("cannot remove {}: {e}", tmp.display())))?;
    }
    if working.exists() || !published.exists() {
        return Ok(());
    }
    tracing::info!(
        "adopting {} as the working database {} (the published copy is made from it)",
        published.display(),
        working.display()
    );
    let moved = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|e| {
            Error::Io(format!(
                "cannot move {} to {}: {e}",
                from.display(),
                to.display()
            ))
        })
    };
    // The WAL first: a crash between the two leaves the database where the next run adopts it again.
    let wal_of = crate::warehouse::wal_of;
    if wal_of(published).exists() {
        moved(&wal_of(published), &wal_of(working))?;
    }
    moved(published, working)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(working, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::Io(format!("cannot make {} writable: {e}", working.display())))?;
    }
    Ok(())
}
