//! Who may read the published snapshot: the owner alone (the default), or a group of the machine's accounts
//! (`--share-group`), for a team that shares one server.
//!
//! Private by default is right: the warehouse is somebody's copy of records they chose to keep. A team needs
//! a way to share it without a `chmod` by hand that the next publish undoes. With a share group the data
//! directory becomes 0750 and the snapshot 0440, both of that group, at every publish; everything else
//! (the working database, the ledger, pages, reports, logs) stays in directories and files private to the
//! owner, so the group sees the analysts' file and nothing of dobsob's own. The directories above the data
//! directory are the user's to open to the group.

use std::ffi::CString;
use std::io;
use std::path::Path;

/// Who reads the published snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sharing {
    /// The owner only: data directory 0700, snapshot 0400.
    Private,
    /// A group too: data directory 0750, snapshot 0440, both of group `gid`.
    Group { name: String, gid: u32 },
}

/// The key of `dobsob.meta` that remembers `--share-group` for the data directory.
pub const META_KEY: &str = "share_group";

/// The value of `--share-group` that turns sharing off again.
pub const PRIVATE: &str = "none";

impl Sharing {
    /// `--share-group NAME`: the group must exist and the user must be in it (or be root), so that a typo
    /// is an error before anything is written, not a snapshot nobody can read. [`PRIVATE`] is
    /// [`Sharing::Private`].
    pub fn parse(name: &str) -> Result<Sharing, String> {
        let name = name.trim();
        if name == PRIVATE {
            return Ok(Sharing::Private);
        }
        if name.is_empty() {
            return Err(format!(
                "--share-group needs a group name (or `{PRIVATE}` to keep the warehouse private)"
            ));
        }
        let gid = group_id(name).ok_or_else(|| {
            format!("there is no group {name:?} on this machine (see /etc/group)")
        })?;
        if !may_use_group(gid) {
            return Err(format!(
                "you are not in the group {name:?}, so dobsob cannot give the warehouse \
                 to it (add yourself with `usermod -aG {name} $USER` and log in again, or choose a group \
                 that `id` lists)"
            ));
        }
        Ok(Sharing::Group {
            name: name.to_string(),
            gid,
        })
    }

    /// What `dobsob.meta` records: the group's name, or [`PRIVATE`].
    pub fn recorded(&self) -> &str {
        match self {
            Sharing::Private => PRIVATE,
            Sharing::Group { name, .. } => name,
        }
    }

    /// The published snapshot's mode: read-only, for the owner or the owner and the group.
    fn snapshot_mode(&self) -> u32 {
        match self {
            Sharing::Private => 0o400,
            Sharing::Group { .. } => 0o440,
        }
    }

    /// Gives a new snapshot its mode and group (before it is renamed into place).
    pub fn apply_to_snapshot(&self, path: &Path) -> io::Result<()> {
        if let Sharing::Group { gid, .. } = self {
            chgrp(path, *gid)?;
        }
        set_mode(path, self.snapshot_mode())
    }

    /// Opens the data directory to the group (0750), or closes it again (0700) after sharing ended.
    pub fn apply_to_data_dir(&self, dir: &Path) -> io::Result<()> {
        match self {
            Sharing::Group { gid, .. } => {
                chgrp(dir, *gid)?;
                set_mode(dir, 0o750)
            }
            Sharing::Private => set_mode(dir, 0o700),
        }
    }
}

fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

fn chgrp(p: &Path, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(p, None, Some(gid))
}

/// The id of the group named `name`, from the system's group database.
fn group_id(name: &str) -> Option<u32> {
    let c_name = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: valid pointers to a group struct and a buffer of the given length.
        let r = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if r == libc::ERANGE && buf.len() < 1 << 22 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        return (r == 0 && !found.is_null()).then_some(grp.gr_gid);
    }
}

/// Whether this process may give a file to group `gid`: root may give any; others only their own groups.
fn may_use_group(gid: u32) -> bool {
    // SAFETY: plain queries of the process's credentials.
    unsafe {
        if libc::geteuid() == 0 || libc::getegid() == gid {
            return true;
        }
        let n = libc::getgroups(0, std::ptr::null_mut());
        if n <= 0 {
            return false;
        }
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let n = libc::getgroups(n, groups.as_mut_ptr());
        n > 0 && groups[..n as usize].contains(&gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_group_that_does_not_exist_is_an_error_that_names_it_and_none_is_private() {
        let e = Sharing::parse("no-such-group-dobsob").unwrap_err();
        assert!(
            e.contains("no-such-group-dobsob") && e.contains("/etc/group"),
            "{e}"
        );
        assert!(Sharing::parse(" ").unwrap_err().contains("none"));
        assert_eq!(Sharing::parse("none").unwrap(), Sharing::Private);
    }

    #[test]
    fn the_users_own_group_shares_the_snapshot_read_only_and_the_directory_without_write() {
        let gid = unsafe { libc::getegid() };
        let name = {
            let g = unsafe { libc::getgrgid(gid) };
            assert!(!g.is_null(), "the process's group has a name");
            unsafe { std::ffi::CStr::from_ptr((*g).gr_name) }
                .to_string_lossy()
                .into_owned()
        };
        let share = Sharing::parse(&name).unwrap();
        assert_eq!(share.recorded(), name);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w");
        std::fs::write(&file, b"x").unwrap();
        share.apply_to_snapshot(&file).unwrap();
        share.apply_to_data_dir(dir.path()).unwrap();
        let (f, d) = (
            std::fs::metadata(&file).unwrap(),
            std::fs::metadata(dir.path()).unwrap(),
        );
        assert_eq!((f.mode() & 0o777, f.gid()), (0o440, gid));
        assert_eq!((d.mode() & 0o777, d.gid()), (0o750, gid));
        Sharing::Private.apply_to_snapshot(&file).unwrap();
        Sharing::Private.apply_to_data_dir(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o400);
        assert_eq!(std::fs::metadata(dir.path()).unwrap().mode() & 0o777, 0o700);
    }
}
