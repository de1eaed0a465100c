//! What one sync of a dataset does, decided from what is known before any row is fetched: one pure function
//! for the sync and for its dry run, so that a preview cannot disagree with the run.

use super::Mode;
use crate::warehouse::{Phase, SyncState};

/// The facts a decision rests on.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub mode: Mode,
    /// The warehouse's committed sync state of the dataset (`None`: never loaded, or its table is gone).
    pub state: Option<&'a SyncState>,
    /// The fingerprint of the source's identity, columns and type mapping now ([`super::fingerprint`]).
    pub fingerprint: &'a str,
    /// `--force`: look at the source even when the change gate says it has not changed.
    pub force: bool,
    /// The change gate holds: the portal's `rowsUpdatedAt` is the one recorded at the last sync
    /// ([`super::gate_holds`]).
    pub gate: bool,
    /// Whether about every row changed after the watermark (a publisher's full replace); `None` until
    /// counted, which [`Decision::CheckReplace`] asks for.
    pub replaced: Option<bool>,
}

/// What the sync does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The source has not changed since the last sync: nothing is fetched.
    Unchanged,
    /// Load every row into a fresh table and swap it in; `resume` continues an interrupted load.
    Full { resume: bool, why: &'static str },
    /// Fetch the rows changed after the watermark (and an overlap window behind it).
    Incremental,
    /// Count the rows changed after the watermark, and all of them, then decide again with
    /// [`Facts::replaced`].
    CheckReplace,
}

/// The fraction of rows changed after the watermark (in tenths) from which a pass is a publisher's full
/// replace, reloaded into a fresh table rather than upserted row by row.
pub const REPLACED_TENTHS: u64 = 9;

/// Whether `changed` of `total` rows changed since the watermark is a full replace.
pub fn is_replace(changed: u64, total: u64) -> bool {
    changed > 0 && changed * 10 >= total * REPLACED_TENTHS
}

/// The decision for these facts.
pub fn decide(f: &Facts) -> Decision {
    let same_schema = f
        .state
        .is_some_and(|s| s.schema_fingerprint == f.fingerprint);
    match f.state {
        None => {
            return Decision::Full {
                resume: false,
                why: "never loaded",
            }
        }
        Some(s) if s.phase == Phase::Full => {
            return if same_schema {
                Decision::Full {
                    resume: true,
                    why: "resuming an interrupted full load",
                }
            } else {
                Decision::Full {
                    resume: false,
                    why: "an interrupted full load, from the start: the columns changed since",
                }
            }
        }
        Some(_) if !same_schema => {
            return Decision::Full {
                resume: false,
                why: "columns or type mapping changed",
            }
        }
        Some(_) if f.mode == Mode::Rebuild => {
            return Decision::Full {
                resume: false,
                why: "rebuild",
            }
        }
        Some(_) => {}
    }
    if !f.force && f.gate {
        return Decision::Unchanged;
    }
    match (f.state.and_then(|s| s.watermark.as_ref()), f.replaced) {
        // Nothing to count from: every row is new to an empty table.
        (None, _) | (_, Some(false)) => Decision::Incremental,
        (Some(_), None) => Decision::CheckReplace,
        (Some(_), Some(true)) => Decision::Full {
            resume: false,
            why: "the publisher replaced about every row",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soda::Watermark;

    fn state(phase: Phase, fingerprint: &str) -> SyncState {
        SyncState {
            phase,
            cursor_id: None,
            watermark: Some(Watermark {
                updated_at: "2026-01-01T00:00:00.000Z".into(),
                id: "row-1".into(),
            }),
            schema_fingerprint: fingerprint.into(),
        }
    }

    fn facts<'a>(s: Option<&'a SyncState>) -> Facts<'a> {
        Facts {
            mode: Mode::Sync,
            state: s,
            fingerprint: "f",
            force: false,
            gate: false,
            replaced: None,
        }
    }

    #[test]
    fn every_path_of_the_decision() {
        let live = state(Phase::Incremental, "f");
        let loading = state(Phase::Full, "f");
        let loading_old = state(Phase::Full, "old");
        let changed = state(Phase::Incremental, "old");
        assert_eq!(
            decide(&facts(None)),
            Decision::Full {
                resume: false,
                why: "never loaded"
            }
        );
        assert!(matches!(
            decide(&facts(Some(&loading))),
            Decision::Full { resume: true, .. }
        ));
        // An interrupted load resumes even under a gate, and in a rebuild.
        let rebuild = Facts {
            mode: Mode::Rebuild,
            gate: true,
            ..facts(Some(&loading))
        };
        assert!(matches!(
            decide(&rebuild),
            Decision::Full { resume: true, .. }
        ));
        assert!(matches!(
            decide(&facts(Some(&loading_old))),
            Decision::Full { resume: false, .. }
        ));
        assert_eq!(
            decide(&facts(Some(&changed))),
            Decision::Full {
                resume: false,
                why: "columns or type mapping changed"
            }
        );
        let rebuild = Facts {
            mode: Mode::Rebuild,
            gate: true,
            ..facts(Some(&live))
        };
        assert!(matches!(
            decide(&rebuild),
            Decision::Full { why: "rebuild", .. }
        ));
        let gated = Facts {
            gate: true,
            ..facts(Some(&live))
        };
        assert_eq!(decide(&gated), Decision::Unchanged);
        assert_eq!(
            decide(&Facts {
                force: true,
                ..gated
            }),
            Decision::CheckReplace
        );
        assert_eq!(decide(&facts(Some(&live))), Decision::CheckReplace);
        assert_eq!(
            decide(&Facts {
                replaced: Some(false),
                ..facts(Some(&live))
            }),
            Decision::Incremental
        );
        assert!(matches!(
            decide(&Facts {
                replaced: Some(true),
                ..facts(Some(&live))
            }),
            Decision::Full { resume: false, .. }
        ));
        assert!(is_replace(90, 100) && !is_replace(89, 100) && !is_replace(0, 0));
    }
}
