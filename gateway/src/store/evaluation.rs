//! What Evaluate stores per held-out conversation: each model's summary of it, scored the same
//! way (the analyzer's error categories, ROUGE against the human references, the judge).

use serde::{Deserialize, Serialize};

/// Every model's summary of one held-out conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub channel: String,
    pub teacher: ScoredSummary,
    /// The student trained on the ARF-refined data.
    pub student: ScoredSummary,
    /// The student trained on the teacher's summaries as they are (compare_unrevised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrevised: Option<ScoredSummary>,
    /// The base model, zero-shot (compare_unrevised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<ScoredSummary>,
    /// The student trained on the unflagged teacher summaries only (compare_filter_only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_only: Option<ScoredSummary>,
    /// The student trained on the human references (compare_oracle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oracle: Option<ScoredSummary>,
}

/// The models a report compares, in the order its tables show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Model {
    Base,
    Unrevised,
    FilterOnly,
    Student,
    Oracle,
    Teacher,
}

impl Model {
    pub const ALL: [Model; 6] = [
        Model::Base,
        Model::Unrevised,
        Model::FilterOnly,
        Model::Student,
        Model::Oracle,
        Model::Teacher,
    ];

    /// The name of its score card (`ScoreCard.model`).
    pub fn card_name(self) -> &'static str {
        match self {
            Model::Base => "base",
            Model::Unrevised => "unrevised",
            Model::FilterOnly => "filter_only",
            Model::Student => "student",
            Model::Oracle => "oracle",
            Model::Teacher => "teacher",
        }
    }

    /// What a reader of the report calls it.
    pub fn title(self) -> &'static str {
        match self {
            Model::Base => "base model, zero-shot",
            Model::Unrevised => "student on unrevised data",
            Model::FilterOnly => "student on unflagged data only",
            Model::Student => "student on ARF-refined data",
            Model::Oracle => "student on human references",
            Model::Teacher => "teacher",
        }
    }
}

impl Evaluation {
    pub fn get(&self, model: Model) -> Option<&ScoredSummary> {
        match model {
            Model::Base => self.base.as_ref(),
            Model::Unrevised => self.unrevised.as_ref(),
            Model::FilterOnly => self.filter_only.as_ref(),
            Model::Student => Some(&self.student),
            Model::Oracle => self.oracle.as_ref(),
            Model::Teacher => Some(&self.teacher),
        }
    }

    /// Drops every summary's text, keeping the scores: what a report tallies past the few
    /// summaries it shows.
    pub fn forget_texts(&mut self) {
        let optional = [
            &mut self.unrevised,
            &mut self.base,
            &mut self.filter_only,
            &mut self.oracle,
        ];
        let sides = [&mut self.teacher, &mut self.student]
            .into_iter()
            .chain(optional.into_iter().filter_map(Option::as_mut));
        for side in sides {
            side.summary = String::new();
        }
    }

    /// Stores a comparison model's summary.
    pub fn set(&mut self, model: Model, scored: ScoredSummary) {
        let slot = match model {
            Model::Base => &mut self.base,
            Model::Unrevised => &mut self.unrevised,
            Model::FilterOnly => &mut self.filter_only,
            Model::Oracle => &mut self.oracle,
            Model::Student => return self.student = scored,
            Model::Teacher => return self.teacher = scored,
        };
        *slot = Some(scored);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoredSummary {
    pub summary: String,
    /// Error categories the analyzer found in it (sorted, each once).
    pub categories: Vec<String>,
    /// Each category with the rule that found it, `category/detector` (sorted, each once), so a
    /// category that several rules find is also counted per rule. Empty in stores older than it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// The analyzer could not check it (it refused the request).
    #[serde(default)]
    pub failed: bool,
    /// F-measures against the human references; `None` where the data has none.
    #[serde(default)]
    pub rouge: Option<Rouge>,
    /// The judge's 1-5 rating; `None` when no judge ran or it gave no usable answer.
    #[serde(default)]
    pub judge: Option<u8>,
    #[serde(default)]
    pub output_tokens: u32,
    /// The model's mean per-token negative log-likelihood of the human references (the mean
    /// over them), asked as it summarizes; `None` without references, or for the teacher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_nll: Option<f64>,
}

/// A category as one rule found it (`ScoredSummary::rules`).
pub fn rule(category: &str, detector: &str) -> String {
    format!("{category}/{detector}")
}

/// The category of a `rule`.
pub fn rule_category(rule: &str) -> &str {
    rule.split_once('/').map_or(rule, |(category, _)| category)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rouge {
    pub rouge1: f64,
    pub rouge2: f64,
    #[serde(rename = "rougeL")]
    pub rouge_l: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_evaluations_stored_before_the_comparison_existed() {
        let old = r#"{"channel":"chat","teacher":{"summary":"t","categories":["omission"],"rouge":null,"judge":4},
            "student":{"summary":"s","categories":[],"failed":false,"rouge":{"rouge1":0.5,"rouge2":0.25,"rougeL":0.4},
            "judge":null,"output_tokens":12}}"#;
        let e: Evaluation = serde_json::from_str(old).unwrap();
        assert_eq!(e.teacher.judge, Some(4));
        assert_eq!(e.student.rouge.unwrap().rouge_l, 0.4);
        assert!(e.get(Model::Base).is_none() && e.get(Model::Unrevised).is_none());
        let again: Evaluation = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(again, e);
    }
}
