//! The versioned error taxonomy: stable category ids, what each means, how bad it is by default,
//! and the instruction the editor model receives when a summary is flagged with it.
//!
//! The revision instruction is the point of the taxonomy: it is what turns "this summary is bad"
//! into a targeted rewrite. Ids are stable across versions; a definition or instruction may be
//! reworded, which bumps [`TAXONOMY_VERSION`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Bumped whenever a category is added or a definition or instruction changes.
pub const TAXONOMY_VERSION: &str = "2026-11.1";

/// How much a finding matters to a reader of the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = UnknownSeverity;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            other => Err(UnknownSeverity(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity `{0}` (expected low, medium, high or critical)")]
pub struct UnknownSeverity(pub String);

/// A stable category id. The string form (`as_str`) is what crosses the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CategoryId {
    HallucinatedFact,
    UnsupportedAction,
    Omission,
    SpeakerAttribution,
    Polarity,
    PiiExposure,
    FormatViolation,
    Truncation,
    Repetition,
    WrongLanguage,
}

impl CategoryId {
    /// Every id, in the taxonomy's display order.
    pub const ALL: [CategoryId; 10] = [
        CategoryId::HallucinatedFact,
        CategoryId::UnsupportedAction,
        CategoryId::Omission,
        CategoryId::SpeakerAttribution,
        CategoryId::Polarity,
        CategoryId::PiiExposure,
        CategoryId::FormatViolation,
        CategoryId::Truncation,
        CategoryId::Repetition,
        CategoryId::WrongLanguage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CategoryId::HallucinatedFact => "hallucinated_fact",
            CategoryId::UnsupportedAction => "unsupported_action",
            CategoryId::Omission => "omission",
            CategoryId::SpeakerAttribution => "speaker_attribution",
            CategoryId::Polarity => "polarity",
            CategoryId::PiiExposure => "pii_exposure",
            CategoryId::FormatViolation => "format_violation",
            CategoryId::Truncation => "truncation",
            CategoryId::Repetition => "repetition",
            CategoryId::WrongLanguage => "wrong_language",
        }
    }

    /// The taxonomy entry for this id (every id has one).
    pub fn category(self) -> &'static Category {
        // CATEGORIES is in the same order as ALL, checked by a test.
        &CATEGORIES[self as usize]
    }
}

impl fmt::Display for CategoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CategoryId {
    type Err = UnknownCategory;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CategoryId::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCategory(s.to_string()))
    }
}

/// An id that is not in this version of the taxonomy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown category id `{0}` (taxonomy {TAXONOMY_VERSION})")]
pub struct UnknownCategory(pub String);

/// One entry of the taxonomy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Category {
    pub id: CategoryId,
    /// A short human name for tables and reports.
    pub name: &'static str,
    pub definition: &'static str,
    pub default_severity: Severity,
    /// What the editor model is told to do when a summary is flagged with this category.
    pub revision_instruction: &'static str,
}

/// The taxonomy as served by GetTaxonomy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Taxonomy {
    pub version: &'static str,
    pub categories: &'static [Category],
}

impl Taxonomy {
    /// The taxonomy this build of the analyzer uses.
    pub fn current() -> Taxonomy {
        Taxonomy {
            version: TAXONOMY_VERSION,
            categories: &CATEGORIES,
        }
    }

    /// Looks a category up by its string id; an unknown id is an error naming it.
    pub fn get(&self, id: &str) -> Result<&'static Category, UnknownCategory> {
        Ok(id.parse::<CategoryId>()?.category())
    }
}

static CATEGORIES: [Category; 10] = [
    Category {
        id: CategoryId::HallucinatedFact,
        name: "Hallucinated fact",
        definition: "A number, id, amount, date, product or name in the summary that the conversation does not support.",
        default_severity: Severity::High,
        revision_instruction: "Remove or correct the flagged detail: every number, amount, date, id, product and name must appear in the conversation. If the conversation does not state it, leave it out rather than guess.",
    },
    Category {
        id: CategoryId::UnsupportedAction,
        name: "Unsupported action",
        definition: "The summary reports an action or outcome that did not happen in the conversation: a refund, replacement, credit, escalation, visit, delivery or resolution.",
        default_severity: Severity::High,
        revision_instruction: "Delete the flagged action or outcome, or restate it exactly as far as the conversation goes (offered, asked, promised to look into). Never report a refund, replacement, credit, escalation or resolution the agent did not actually give.",
    },
    Category {
        id: CategoryId::Omission,
        name: "Omission",
        definition: "The summary leaves out the customer's issue, the agent's response, or the outcome.",
        default_severity: Severity::Medium,
        revision_instruction: "Add what is missing in one short sentence each: the customer's issue, what the agent said or did in response, and the outcome if there is one. Keep everything already correct.",
    },
    Category {
        id: CategoryId::SpeakerAttribution,
        name: "Speaker attribution",
        definition: "Something said or done by one party (customer or agent) is attributed to the other.",
        default_severity: Severity::High,
        revision_instruction: "Fix who did what: the customer raises the issue and gives their details; the agent apologizes, asks, advises and acts. Swap the flagged subject back to the party who actually said or did it.",
    },
    Category {
        id: CategoryId::Polarity,
        name: "Polarity",
        definition: "The summary contradicts the conversation: a dropped or added negation, or the wrong status (working/not working, can/cannot, will/will not).",
        default_severity: Severity::High,
        revision_instruction: "Restore the meaning the conversation has: check each negation (not, cannot, will not, unable) in the flagged sentence against the conversation and make it say the same thing.",
    },
    Category {
        id: CategoryId::PiiExposure,
        name: "PII exposure",
        definition: "Personal data in the summary: email addresses, phone numbers, card or account numbers, street addresses.",
        default_severity: Severity::Critical,
        revision_instruction: "Remove the flagged personal data entirely (do not mask it with asterisks). Refer to it generically if it matters, e.g. 'the customer shared their phone number'.",
    },
    Category {
        id: CategoryId::FormatViolation,
        name: "Format violation",
        definition: "The summary is not plain third-person prose of a sensible length: a model preamble ('Sure! Here is a summary'), bullets or markdown, first person, pasted transcript, or a length far outside bounds.",
        default_severity: Severity::Medium,
        revision_instruction: "Rewrite as two or three plain sentences of third-person prose (the customer ..., the agent ...), with no preamble, no bullets or headings, no quoted transcript, under 60 words.",
    },
    Category {
        id: CategoryId::Truncation,
        name: "Truncation",
        definition: "The summary stops in the middle of a sentence.",
        default_severity: Severity::Medium,
        revision_instruction: "Complete the unfinished last sentence from the conversation, ending it with a full stop; change nothing else.",
    },
    Category {
        id: CategoryId::Repetition,
        name: "Repetition",
        definition: "The same sentence or phrase is repeated in the summary.",
        default_severity: Severity::Low,
        revision_instruction: "Say each thing once: delete the repeated sentence or phrase and keep the first occurrence.",
    },
    Category {
        id: CategoryId::WrongLanguage,
        name: "Wrong language",
        definition: "The summary is not written in the language (or script) of the conversation.",
        default_severity: Severity::High,
        revision_instruction: "Rewrite the summary in the language of the conversation, keeping its content.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_in_id_order_so_lookup_by_discriminant_is_right() {
        for id in CategoryId::ALL {
            assert_eq!(id.category().id, id);
        }
    }

    #[test]
    fn ids_round_trip_and_unknown_ids_are_errors_naming_them() {
        let tax = Taxonomy::current();
        for c in tax.categories {
            assert_eq!(tax.get(c.id.as_str()).unwrap().id, c.id);
            assert_eq!(
                serde_json::to_string(&c.id).unwrap(),
                format!("\"{}\"", c.id.as_str())
            );
        }
        let err = tax.get("hallucination").unwrap_err();
        assert!(err.to_string().contains("`hallucination`"), "{err}");
        assert!(
            "Omission".parse::<CategoryId>().is_err(),
            "ids are case-sensitive"
        );
    }

    #[test]
    fn every_category_has_text_an_editor_can_act_on() {
        for c in Taxonomy::current().categories {
            assert!(
                c.definition.len() > 30 && c.revision_instruction.len() > 30,
                "{}",
                c.id
            );
        }
        assert_eq!(
            CategoryId::PiiExposure.category().default_severity,
            Severity::Critical
        );
    }

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Low < Severity::Critical);
        assert_eq!("high".parse::<Severity>().unwrap(), Severity::High);
        assert!("severe".parse::<Severity>().is_err());
    }
}
