//! What filled a data directory: the catalog (a file's absolute path, or the built-in one, with a fingerprint
//! of its text) and the portal, recorded in `<data>/source.json` by every sync and rebuild.
//!
//! A later command on the same data directory without `--catalog` / `--portal` uses the recorded ones (and
//! says so), so that `dobsob status` after an offline trial lists the trial's datasets and `dobsob verify`
//! asks the trial's portal. A command that names another catalog or portal is refused, unless
//! `--switch-source` confirms it: one warehouse holding tables from two sources would be a surprise.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::Error;

/// The file in the data directory.
pub const FILE: &str = "source.json";

/// A data directory's source, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The catalog file's absolute path; `None`: the built-in catalog.
    pub catalog: Option<PathBuf>,
    /// sha256 of the catalog's text (tells a copy or a moved file from another catalog).
    pub catalog_sha256: String,
    /// The portal's base URL.
    pub portal: String,
}

/// sha256 of a catalog's text, hex.
pub fn fingerprint(text: &str) -> String {
    crate::soda::client::hex(&sha2::Sha256::digest(text.as_bytes()))
}

impl Source {
    /// How it reads in messages: the catalog and the portal.
    pub fn describe(&self) -> String {
        format!("{} and the portal {}", self.catalog_name(), self.portal)
    }

    pub fn catalog_name(&self) -> String {
        match &self.catalog {
            None => "the built-in catalog".into(),
            Some(p) => format!("the catalog {}", p.display()),
        }
    }

    /// The source recorded for `data_dir`, if any. A file that cannot be read or parsed is a configuration
    /// error naming it.
    pub fn read(data_dir: &Path) -> Result<Option<Source>, Error> {
        let path = data_dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(None),
            Err(e) => {
                return Err(Error::Config(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::Config(format!(
                "{} is not a dobsob source record ({e}): move it aside, and the next sync records the \
                 catalog and portal it uses",
                path.display()
            ))
        })
    }

    /// Records this source for `data_dir` (private to the user; replaced atomically).
    pub fn write(&self, data_dir: &Path) -> Result<(), Error> {
        let path = data_dir.join(FILE);
        let tmp = data_dir.join(format!(".{FILE}.tmp"));
        let json = serde_json::to_string_pretty(self).expect("a source serializes");
        crate::files::write_private(&tmp, json.as_bytes())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))
    }

    /// Whether `other` names the same catalog: the built-in one both (whatever this dobsob version's text
    /// of it), the same file, or a file with the same text.
    pub fn same_catalog(&self, other: &Source) -> bool {
        let canonical =
            |p: &Option<PathBuf>| p.as_ref().map(|p| p.canonicalize().unwrap_or(p.clone()));
        self.catalog_sha256 == other.catalog_sha256
            || canonical(&self.catalog) == canonical(&other.catalog)
    }

    /// Whether `other` names the same portal (as URLs: `http://h:80` is `http://h:80/`).
    pub fn same_portal(&self, other: &Source) -> bool {
        let norm = |s: &str| {
            url::Url::parse(s)
                .map(|u| u.as_str().trim_end_matches('/').to_string())
                .unwrap_or_else(|_| s.trim_end_matches('/').to_string())
        };
        norm(&self.portal) == norm(&other.portal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(catalog: Option<&str>, sha: &str, portal: &str) -> Source {
        Source {
            catalog: catalog.map(PathBuf::from),
            catalog_sha256: sha.into(),
            portal: portal.into(),
        }
    }

    #[test]
    fn same_catalog_by_path_or_text_and_same_portal_by_url() {
        let a = src(Some("/x/a.toml"), "1", "http://127.0.0.1:8080");
        assert!(
            a.same_catalog(&src(Some("/x/a.toml"), "2", "p")),
            "edited in place"
        );
        assert!(
            a.same_catalog(&src(Some("/y/copy.toml"), "1", "p")),
            "a copy"
        );
        assert!(!a.same_catalog(&src(Some("/y/b.toml"), "3", "p")));
        assert!(!a.same_catalog(&src(None, "4", "p")), "the built-in one");
        assert!(
            src(None, "4", "p").same_catalog(&src(None, "5", "p")),
            "the built-in catalog of another dobsob version"
        );
        assert!(a.same_portal(&src(None, "", "http://127.0.0.1:8080/")));
        assert!(!a.same_portal(&src(None, "", "http://127.0.0.1:8081")));
    }

    #[test]
    fn round_trips_and_names_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Source::read(dir.path()).unwrap(), None);
        let s = src(Some("/x/a.toml"), "ab", "https://data.cityofnewyork.us");
        s.write(dir.path()).unwrap();
        assert_eq!(Source::read(dir.path()).unwrap(), Some(s));
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        let e = Source::read(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("source.json") && e.contains("move it aside"),
            "{e}"
        );
    }
}
