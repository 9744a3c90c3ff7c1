//! What a detector reports: one error, where it is in the summary, and what in the conversation
//! supports the call (or that nothing does).

use serde::Serialize;

use crate::taxonomy::{CategoryId, Severity};

/// A byte range into a text, with the text itself so a reader need not re-slice.
/// `start..end` always lies on UTF-8 character boundaries of the text it points into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextSpan {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

impl TextSpan {
    /// The span `start..end` of `source`, clamped and snapped outwards to character boundaries,
    /// so a detector's off-by-one can never panic or produce invalid UTF-8.
    pub fn of(source: &str, start: usize, end: usize) -> TextSpan {
        let (start, end) = crate::text::snap(source, start, end);
        TextSpan {
            start,
            end,
            text: source[start..end].to_string(),
        }
    }

    pub fn overlaps(&self, other: &TextSpan) -> bool {
        // Empty spans (a point, e.g. "the summary as a whole is missing X") overlap what contains them.
        self.start < other.end.max(other.start + 1) && other.start < self.end.max(self.start + 1)
    }

    pub fn contains(&self, other: &TextSpan) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// Where in the conversation a finding is grounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// A span of one turn (0-based turn index; the span is into that turn's text).
    Turn { turn: usize, span: TextSpan },
    /// The detector looked and found nothing in the conversation that supports the summary span:
    /// the absence is the evidence (a hallucinated number, an action nobody took).
    NotFound,
    /// The finding is about the summary alone (format, truncation, repetition): the conversation
    /// is not evidence either way.
    NotApplicable,
}

impl Evidence {
    pub fn turn(
        turns: &[arf_common::dataset::Turn],
        turn: usize,
        start: usize,
        end: usize,
    ) -> Evidence {
        match turns.get(turn) {
            Some(t) => Evidence::Turn {
                turn,
                span: TextSpan::of(&t.text, start, end),
            },
            None => Evidence::NotFound,
        }
    }
}

/// One error in one summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub category: CategoryId,
    pub severity: Severity,
    pub summary_span: TextSpan,
    pub evidence: Evidence,
    /// The detector that raised it (`grounding`, `pii`, `judge.fact_check`, ...); a detector with
    /// several rules adds the rule after a dot (`attribution.role`).
    pub detector: String,
    /// How sure the detector is, in [0, 1].
    pub confidence: f32,
    /// One sentence a person (or the editor model) can read.
    pub explanation: String,
    /// The replacement of `summary_span` that fixes the error, where the detector determines
    /// it (`Finding.rule_fix`); `None` where fixing takes judgment.
    pub fix: Option<String>,
}

impl Finding {
    /// A finding with the category's default severity; confidence is clamped into [0, 1]
    /// (NaN becomes 0) so no detector can put an out-of-range value on the wire.
    pub fn new(
        category: CategoryId,
        detector: &str,
        summary_span: TextSpan,
        evidence: Evidence,
        confidence: f32,
        explanation: impl Into<String>,
    ) -> Finding {
        let confidence = if confidence.is_nan() {
            0.0
        } else {
            confidence.clamp(0.0, 1.0)
        };
        Finding {
            category,
            severity: category.category().default_severity,
            summary_span,
            evidence,
            detector: detector.to_string(),
            confidence,
            explanation: explanation.into(),
            fix: None,
        }
    }

    /// The finding with the replacement that fixes it.
    pub fn with_fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }

    pub fn with_severity(mut self, severity: Severity) -> Finding {
        self.severity = severity;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_snap_to_char_boundaries_and_clamp() {
        let s = "café ok";
        // byte 4 is inside 'é' (bytes 3..5): the span widens to the whole character.
        let span = TextSpan::of(s, 4, 4);
        assert_eq!((span.start, span.end), (3, 5));
        assert_eq!(span.text, "é");
        let span = TextSpan::of(s, 2, 999);
        assert_eq!(span.text, "fé ok");
        let span = TextSpan::of(s, 50, 10);
        assert_eq!(span.text, "");
    }

    #[test]
    fn overlap_and_containment() {
        let a = TextSpan::of("0123456789", 2, 6);
        let b = TextSpan::of("0123456789", 5, 8);
        let c = TextSpan::of("0123456789", 6, 9);
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(a.contains(&TextSpan::of("0123456789", 3, 5)));
        assert!(!a.contains(&b));
        let point = TextSpan::of("0123456789", 4, 4);
        assert!(point.overlaps(&a));
    }

    #[test]
    fn confidence_is_clamped_and_nan_is_zero() {
        let span = TextSpan::of("x", 0, 1);
        let f = Finding::new(
            CategoryId::Truncation,
            "t",
            span.clone(),
            Evidence::NotApplicable,
            1.7,
            "",
        );
        assert_eq!(f.confidence, 1.0);
        let f = Finding::new(
            CategoryId::Truncation,
            "t",
            span,
            Evidence::NotApplicable,
            f32::NAN,
            "",
        );
        assert_eq!(f.confidence, 0.0);
        assert_eq!(f.severity, Severity::Medium);
    }
}
