//! What the stages decided for an item, and the one rule of what gets trained on. These are the
//! strings stored in the database and sent in `ItemProgress.outcome`; nothing else spells them.

use arf_proto::v1 as pb;

/// Analyze's verdict on a teacher summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalysisOutcome {
    /// No finding: trained on as it is.
    Clean,
    /// Findings: Revise rewrites it.
    Flagged,
    /// Not fully checked (a detector failed, or the analyzer refused the item).
    Failed,
}

impl AnalysisOutcome {
    pub fn of(analysis: &pb::AnalyzeResponse) -> Self {
        if !analysis.detector_failures.is_empty() {
            Self::Failed
        } else if analysis.findings.is_empty() {
            Self::Clean
        } else {
            Self::Flagged
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Flagged => "flagged",
            Self::Failed => "failed",
        }
    }
}

/// Revise's verdict on a training item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionOutcome {
    /// The teacher's summary had no finding: nothing to revise.
    Clean,
    /// A revision the analyzer found better replaces the teacher's summary.
    Accepted,
    /// The fixes the detectors determined, applied in code (repair RULES_THEN_MODEL), made a
    /// summary the analyzer found better: it replaces the teacher's, no editor asked.
    Repaired,
    /// No revision was better than the teacher's summary.
    Rejected,
    /// The item could not be revised or checked (analysis failed, the editor refused it, ...).
    Failed,
}

/// What a rejected or failed revision leaves in the training set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unimproved {
    Exclude,
    KeepOriginal,
}

impl Unimproved {
    /// The run's policy for summaries no revision improved. Keeping the original is the
    /// default: with a weak editor most flagged rows stay unrevised, and dropping them cost the
    /// student more than their errors did (README, "The revision gate").
    pub fn of(config: &pb::RunConfig) -> Self {
        if config.on_unimproved() == pb::UnimprovedPolicy::Exclude {
            Self::Exclude
        } else {
            Self::KeepOriginal
        }
    }
}

impl RevisionOutcome {
    pub const ALL: [Self; 5] = [
        Self::Clean,
        Self::Accepted,
        Self::Repaired,
        Self::Rejected,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Accepted => "accepted",
            Self::Repaired => "repaired",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The outcomes `keep` selects, as the quoted list of an SQL `IN (...)` (`NULL` when none).
    pub fn sql_list(keep: impl Fn(Self) -> bool) -> String {
        let quoted: Vec<String> = Self::ALL
            .into_iter()
            .filter(|o| keep(*o))
            .map(|o| format!("'{}'", o.as_str()))
            .collect();
        if quoted.is_empty() {
            "NULL".to_string()
        } else {
            quoted.join(", ")
        }
    }

    /// Whether the item's pair is in the refined training set, under the run's policy.
    pub fn trained_on(self, unimproved: Unimproved) -> bool {
        match self {
            Self::Clean | Self::Accepted | Self::Repaired => true,
            Self::Rejected | Self::Failed => unimproved == Unimproved::KeepOriginal,
        }
    }

    /// Whether the item's final summary is the revision (the editor's or the rules') rather
    /// than the teacher's.
    pub fn is_revised(self) -> bool {
        matches!(self, Self::Accepted | Self::Repaired)
    }

    /// Counted as `revisions_rejected`: a revision was wanted and none was accepted.
    pub fn is_unimproved(self) -> bool {
        matches!(self, Self::Rejected | Self::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_reads_back_and_only_unimproved_ones_depend_on_the_policy() {
        for o in RevisionOutcome::ALL {
            assert_eq!(RevisionOutcome::parse(o.as_str()), Some(o));
            let kept = o.trained_on(Unimproved::KeepOriginal);
            let excluded = o.trained_on(Unimproved::Exclude);
            assert!(kept, "{o:?}: keeping the original keeps every item");
            assert_eq!(excluded, !o.is_unimproved(), "{o:?}");
        }
        assert_eq!(RevisionOutcome::parse("flagged"), None);
    }
}
