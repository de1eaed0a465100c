//! The dataset catalog: which Socrata datasets to keep, parsed from TOML and validated once.
//!
//! The built-in catalog (`catalog.toml`, beside this file) is compiled into the binary; users point `--catalog` at their own
//! file for other portals. Everything read here is validated into types ([`DatasetKey`], [`SocrataId`],
//! [`Group`], [`Frequency`]) so that the rest of the program never sees an unchecked string.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The catalog compiled into the binary.
pub const BUILTIN_CATALOG: &str = include_str!("catalog.toml");

/// Where a catalog came from, for error messages.
#[derive(Debug, Clone)]
pub enum CatalogSource {
    Builtin,
    File(PathBuf),
}

impl fmt::Display for CatalogSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogSource::Builtin => write!(f, "the built-in catalog"),
            CatalogSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{source_name} is not a valid catalog: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: dataset #{index} ({key}): {message}")]
    Invalid {
        source_name: String,
        index: usize,
        key: String,
        message: String,
    },
    #[error("{source_name}: {message}")]
    Catalog {
        source_name: String,
        message: String,
    },
}

/// A dataset key: `[a-z][a-z0-9_]{0,62}`. It names the DuckDB table, so the rule keeps it a plain identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetKey(String);

impl DatasetKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut chars = s.chars();
        let ok_first = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let ok_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if s == "dobsob_datasets" {
            return Err(format!(
                "key {s:?} is reserved: the warehouse's view of its datasets has that name"
            ));
        }
        if !ok_first || !ok_rest || s.len() > 63 {
            return Err(format!(
                "key {s:?} must match [a-z][a-z0-9_]{{0,62}} (lowercase letter, then lowercase letters, digits or _)"
            ));
        }
        Ok(DatasetKey(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DatasetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Socrata dataset id ("4x4"): two groups of four lowercase alphanumerics, e.g. `3h2n-5cm9`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SocrataId(String);

impl SocrataId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        let part = |r: &[u8]| {
            r.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        };
        if b.len() == 9 && b[4] == b'-' && part(&b[..4]) && part(&b[5..]) {
            Ok(SocrataId(s.to_string()))
        } else {
            Err(format!(
                "id {s:?} is not a Socrata dataset id like \"3h2n-5cm9\""
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SocrataId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Primary,
    Secondary,
    Tertiary,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Group::Primary => "primary",
            Group::Secondary => "secondary",
            Group::Tertiary => "tertiary",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Frequency {
    Daily,
    Weekly,
    Monthly,
    Quarterly,
}

impl Frequency {
    /// The catalog's spelling back into a frequency.
    pub fn parse(s: &str) -> Option<Frequency> {
        [
            Frequency::Daily,
            Frequency::Weekly,
            Frequency::Monthly,
            Frequency::Quarterly,
        ]
        .into_iter()
        .find(|f| f.to_string() == s)
    }

    /// How long a synced copy stays fresh. Months and quarters use their longest length, so a dataset is never
    /// called stale before its publisher could have changed it.
    pub fn period(self) -> Duration {
        const DAY: u64 = 24 * 60 * 60;
        Duration::from_secs(match self {
            Frequency::Daily => DAY,
            Frequency::Weekly => 7 * DAY,
            Frequency::Monthly => 31 * DAY,
            Frequency::Quarterly => 92 * DAY,
        })
    }
}

impl fmt::Display for Frequency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Frequency::Daily => "daily",
            Frequency::Weekly => "weekly",
            Frequency::Monthly => "monthly",
            Frequency::Quarterly => "quarterly",
        })
    }
}

/// How urgently a dataset is synced: jobs start in this order (then smallest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Priority {
    /// The catalog marks it `critical` (the datasets investigators open first).
    Critical,
    /// Published daily.
    High,
    /// Published weekly or monthly.
    Medium,
    /// Published quarterly or less.
    Low,
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Priority::Critical => "CRITICAL",
            Priority::High => "HIGH",
            Priority::Medium => "MEDIUM",
            Priority::Low => "LOW",
        })
    }
}

/// One dataset to keep in step.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub key: DatasetKey,
    pub id: SocrataId,
    pub name: String,
    pub group: Group,
    pub frequency: Frequency,
    pub size_mb: u32,
    pub critical: bool,
    /// Column types the catalog gives in place of the portal's: `field name -> type`
    /// (`warehouse::schema::OVERRIDE_TYPES`), the catalog's `[columns]` for every dataset that has the
    /// column, then the dataset's own `[dataset.columns]`.
    pub column_types: BTreeMap<String, String>,
    /// The names the dataset's own `[dataset.columns]` gives: a sync warns when the portal lacks one (the
    /// catalog-wide `[columns]` names columns that only some datasets have).
    pub own_column_types: Vec<String>,
}

impl Dataset {
    /// The priority from the catalog's `critical` flag and the publication frequency.
    pub fn priority(&self) -> Priority {
        match (self.critical, self.frequency) {
            (true, _) => Priority::Critical,
            (false, Frequency::Daily) => Priority::High,
            (false, Frequency::Weekly | Frequency::Monthly) => Priority::Medium,
            (false, Frequency::Quarterly) => Priority::Low,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub portal: Option<String>,
    pub datasets: Vec<Dataset>,
    /// When a dataset's data-quality profile is an anomaly (`[quality]`; defaults in
    /// [`crate::quality::Thresholds`]).
    pub quality: crate::quality::Thresholds,
    /// Where it came from, and its text as read (what `dobsob catalog --toml` prints).
    pub source: CatalogSource,
    pub text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    portal: Option<String>,
    /// Column types for every dataset that has the column.
    #[serde(default)]
    columns: BTreeMap<String, String>,
    #[serde(default)]
    dataset: Vec<RawDataset>,
    /// The data-quality thresholds.
    #[serde(default)]
    quality: crate::quality::Thresholds,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    key: String,
    id: String,
    name: String,
    group: Group,
    frequency: Frequency,
    size_mb: u32,
    #[serde(default)]
    critical: bool,
    #[serde(default)]
    columns: BTreeMap<String, String>,
}

impl Catalog {
    /// Loads `path`, or the built-in catalog when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Catalog, CatalogError> {
        match path {
            None => Catalog::parse(BUILTIN_CATALOG, &CatalogSource::Builtin),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| CatalogError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Catalog::parse(&text, &CatalogSource::File(p.to_path_buf()))
            }
        }
    }

    pub fn parse(text: &str, source: &CatalogSource) -> Result<Catalog, CatalogError> {
        let source_name = source.to_string();
        let raw: RawCatalog = toml::from_str(text).map_err(|e| CatalogError::Parse {
            source_name: source_name.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        if raw.dataset.is_empty() {
            return Err(CatalogError::Catalog {
                source_name,
                message: "no [[dataset]] entries".into(),
            });
        }
        check_column_types(&raw.columns).map_err(|message| CatalogError::Catalog {
            source_name: source_name.clone(),
            message: format!("[columns]: {message}"),
        })?;
        let mut keys = HashSet::new();
        let mut ids = HashSet::new();
        let mut datasets = Vec::with_capacity(raw.dataset.len());
        for (i, d) in raw.dataset.into_iter().enumerate() {
            let invalid = |message: String| CatalogError::Invalid {
                source_name: source_name.clone(),
                index: i + 1,
                key: d.key.clone(),
                message,
            };
            let key = DatasetKey::parse(&d.key).map_err(invalid)?;
            let id = SocrataId::parse(&d.id).map_err(invalid)?;
            if d.name.trim().is_empty() {
                return Err(invalid("name is empty".into()));
            }
            if !keys.insert(key.clone()) {
                return Err(invalid(format!("duplicate key {key:?}")));
            }
            if !ids.insert(id.clone()) {
                return Err(invalid(format!(
                    "duplicate id {:?}: another dataset already uses it",
                    id.as_str()
                )));
            }
            check_column_types(&d.columns)
                .map_err(|m| invalid(format!("[dataset.columns]: {m}")))?;
            let own_column_types = d.columns.keys().cloned().collect();
            let mut column_types = raw.columns.clone();
            column_types.extend(d.columns);
            datasets.push(Dataset {
                key,
                id,
                name: d.name,
                group: d.group,
                frequency: d.frequency,
                size_mb: d.size_mb,
                critical: d.critical,
                column_types,
                own_column_types,
            });
        }
        if let Some(p) = &raw.portal {
            validate_portal(p).map_err(|message| CatalogError::Catalog {
                source_name: source_name.clone(),
                message,
            })?;
        }
        raw.quality
            .validate()
            .map_err(|message| CatalogError::Catalog {
                source_name: source_name.clone(),
                message,
            })?;
        Ok(Catalog {
            portal: raw.portal,
            datasets,
            quality: raw.quality,
            source: source.clone(),
            text: text.to_string(),
        })
    }

    pub fn get(&self, key: &str) -> Option<&Dataset> {
        self.datasets.iter().find(|d| d.key.as_str() == key)
    }

    /// The datasets a selection names, in start order: priority (CRITICAL, HIGH, MEDIUM, LOW), then group,
    /// then smallest first (so the most needed and quickest data is fresh first). A key the catalog lacks is
    /// an error that lists the known ones.
    pub fn select(&self, s: &Selection) -> Result<Vec<&Dataset>, String> {
        let mut out: Vec<&Dataset> = match s {
            Selection::Keys(keys) => {
                let mut v: Vec<&Dataset> = Vec::new();
                for k in keys {
                    let k = k.trim();
                    let d = self.get(k).ok_or_else(|| {
                        let known: Vec<&str> =
                            self.datasets.iter().map(|d| d.key.as_str()).collect();
                        format!(
                            "no dataset {k:?} in the catalog; known: {}",
                            known.join(", ")
                        )
                    })?;
                    if !v.iter().any(|x| x.key == d.key) {
                        v.push(d);
                    }
                }
                v
            }
            Selection::Group(g) => self.datasets.iter().filter(|d| d.group == *g).collect(),
            Selection::All => self.datasets.iter().collect(),
        };
        out.sort_by_key(|d| (d.priority(), d.group, d.size_mb));
        Ok(out)
    }
}

/// Which of a catalog's datasets a run takes (the library's; the command line's flags map onto it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Selection {
    /// Every dataset.
    #[default]
    All,
    /// The datasets of one group.
    Group(Group),
    /// These datasets, by key.
    Keys(Vec<String>),
}

/// Checks a catalog's column types: each a type dobsob stores (`text` for an identifier that is a number
/// only by accident, and so on).
fn check_column_types(types: &BTreeMap<String, String>) -> Result<(), String> {
    use crate::warehouse::schema::OVERRIDE_TYPES;
    for (name, t) in types {
        if name.is_empty() || name.starts_with(':') {
            return Err(format!("{name:?} is not a column dobsob stores"));
        }
        if !OVERRIDE_TYPES.contains(&t.as_str()) {
            return Err(format!(
                "{name} = {t:?}: the type must be one of {}",
                OVERRIDE_TYPES.join(", ")
            ));
        }
    }
    Ok(())
}

/// Checks that a portal is an http(s) base URL without query or fragment.
pub fn validate_portal(p: &str) -> Result<url::Url, String> {
    // "127.0.0.1:8080" and "data.cityofnewyork.us" lack a scheme ("localhost:8080" even parses as one).
    let scheme_hint = || {
        let loopback =
            p.starts_with("127.") || p.starts_with("localhost") || p.starts_with("[::1]");
        format!(
            "portal {p:?} needs a scheme: did you mean {}://{p}?",
            if loopback { "http" } else { "https" }
        )
    };
    if !p.contains("://") {
        return Err(scheme_hint());
    }
    let u = url::Url::parse(p).map_err(|e| format!("portal {p:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err(format!(
            "portal {p:?} must be an http:// or https:// URL such as https://data.cityofnewyork.us"
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("portal {p:?} must not have a query or fragment"));
    }
    if u.path() != "/" {
        let mut root = u.clone();
        root.set_path("");
        return Err(format!(
            "portal {p:?} must be the site's address without a path (dobsob adds /resource/... and \
             /api/views/... itself): did you mean {}?",
            root.as_str().trim_end_matches('/')
        ));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_mistakes_get_the_right_url_as_a_hint() {
        let e = validate_portal("127.0.0.1:8080").unwrap_err();
        assert!(e.contains("did you mean http://127.0.0.1:8080?"), "{e}");
        let e = validate_portal("localhost:8080").unwrap_err();
        assert!(e.contains("did you mean http://localhost:8080?"), "{e}");
        let e = validate_portal("data.cityofnewyork.us").unwrap_err();
        assert!(
            e.contains("did you mean https://data.cityofnewyork.us?"),
            "{e}"
        );
        let e = validate_portal("http://host:81/api").unwrap_err();
        assert!(e.contains("did you mean http://host:81?"), "{e}");
        assert!(validate_portal("ftp://host").is_err());
        assert_eq!(
            validate_portal("https://data.cityofnewyork.us/")
                .unwrap()
                .as_str(),
            "https://data.cityofnewyork.us/"
        );
        assert!(validate_portal("http://127.0.0.1:8080").is_ok());
    }

    fn parse(s: &str) -> Result<Catalog, CatalogError> {
        Catalog::parse(s, &CatalogSource::File("test.toml".into()))
    }

    const ONE: &str = r#"
[[dataset]]
key = "dob_violations"
id = "3h2n-5cm9"
name = "DOB Violations"
group = "primary"
frequency = "daily"
size_mb = 250
"#;

    #[test]
    fn builtin_catalog_has_the_18_corrected_datasets() {
        let c = Catalog::load(None).unwrap();
        assert_eq!(c.datasets.len(), 18);
        assert_eq!(c.get("permit_issuance").unwrap().id.as_str(), "ipu4-2q9a");
        assert_eq!(c.get("hpd_vacate_orders").unwrap().id.as_str(), "tb8q-a3ar");
        assert_eq!(
            c.get("property_valuation").unwrap().id.as_str(),
            "8y4t-faws"
        );
        let critical: Vec<_> = c
            .datasets
            .iter()
            .filter(|d| d.critical)
            .map(|d| d.key.as_str())
            .collect();
        assert_eq!(
            critical,
            [
                "housing_litigations",
                "dob_violations",
                "ecb_violations",
                "dob_complaints",
                "hpd_violations"
            ]
        );
    }

    #[test]
    fn minimal_dataset_defaults_critical_to_false() {
        let c = parse(ONE).unwrap();
        assert!(!c.datasets[0].critical);
        assert_eq!(c.datasets[0].group, Group::Primary);
        assert!(c.portal.is_none());
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let e = parse(&format!("{ONE}colour = \"red\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("test.toml") && e.contains("colour"), "{e}");
    }

    #[test]
    fn duplicate_key_and_id_are_rejected_naming_the_dataset() {
        let dup = ONE.replace("3h2n-5cm9", "aaaa-bbbb");
        let e = parse(&format!("{ONE}{dup}")).unwrap_err().to_string();
        assert!(
            e.contains("dataset #2") && e.contains("duplicate key"),
            "{e}"
        );
        let dup = ONE.replace("dob_violations", "other");
        let e = parse(&format!("{ONE}{dup}")).unwrap_err().to_string();
        assert!(
            e.contains("dataset #2 (other)") && e.contains("duplicate id"),
            "{e}"
        );
    }

    #[test]
    fn bad_key_group_and_id_are_rejected() {
        for (from, to, needle) in [
            ("dob_violations", "DOB-Violations", "must match"),
            ("\"primary\"", "\"urgent\"", "urgent"),
            ("3h2n-5cm9", "3h2n5cm9", "not a Socrata dataset id"),
        ] {
            let e = parse(&ONE.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn key_rule_edges() {
        assert!(DatasetKey::parse("a").is_ok());
        assert!(DatasetKey::parse(&"a".repeat(63)).is_ok());
        assert!(DatasetKey::parse(&"a".repeat(64)).is_err());
        assert!(DatasetKey::parse("1abc").is_err());
        assert!(DatasetKey::parse("").is_err());
        assert!(DatasetKey::parse("a\"; drop").is_err());
        assert!(DatasetKey::parse("dobsob_datasets").is_err());
    }

    #[test]
    fn portal_must_be_http() {
        assert!(validate_portal("https://data.cityofnewyork.us").is_ok());
        assert!(validate_portal("ftp://x").is_err());
        assert!(validate_portal("https://x/?a=1").is_err());
        let e = parse(&format!("portal = \"nope\"\n{ONE}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a scheme"), "{e}");
    }

    #[test]
    fn column_types_apply_catalog_wide_and_a_datasets_own_win_and_a_bad_type_names_the_column() {
        let entry = |key: &str, id: &str| {
            format!(
                "[[dataset]]\nkey = \"{key}\"\nid = \"{id}\"\nname = \"n\"\ngroup = \"primary\"\n\
                 frequency = \"daily\"\nsize_mb = 1\n"
            )
        };
        let c = parse(&format!(
            "[columns]\nbin = \"text\"\nlot = \"text\"\n\n{}[dataset.columns]\nlot = \"number\"\nviolationid = \"text\"\n\n{}",
            entry("a", "aaaa-0001"),
            entry("b", "bbbb-0002")
        ))
        .unwrap();
        let types = |k: &str| {
            let d = c.get(k).unwrap();
            (
                d.column_types.clone().into_iter().collect::<Vec<_>>(),
                d.own_column_types.clone(),
            )
        };
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            types("a"),
            (
                vec![
                    s("bin", "text"),
                    s("lot", "number"),
                    s("violationid", "text")
                ],
                vec!["lot".to_string(), "violationid".to_string()]
            )
        );
        assert_eq!(
            types("b"),
            (vec![s("bin", "text"), s("lot", "text")], vec![])
        );
        let e = parse(&format!(
            "[columns]\nbin = \"string\"\n\n{}",
            entry("a", "aaaa-0001")
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("[columns]: bin = \"string\"") && e.contains("text, number"),
            "{e}"
        );
        let e = parse(&format!(
            "{}[dataset.columns]\n\":id\" = \"text\"\n",
            entry("a", "aaaa-0001")
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("dataset #1 (a): [dataset.columns]") && e.contains(":id"),
            "{e}"
        );
    }
}
