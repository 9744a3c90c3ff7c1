//! `arf.v1` <-> analyzer domain. Every field name in an error here is the request's own path,
//! so a client can find what it sent wrong.

use arf_common::status::invalid_field;
use arf_proto::v1 as pb;
use tonic::Status;

use crate::fidelity::{Flagged, Verdict};
use crate::finding::{Evidence, Finding, TextSpan};
use crate::profile::CorpusProfile;
use crate::taxonomy::{CategoryId, Severity, Taxonomy};
use crate::{AnalyzeError, AnalyzeOptions, Limits};

pub fn options(o: Option<pb::AnalyzeOptions>) -> (AnalyzeOptions, bool) {
    let o = o.unwrap_or_default();
    (
        AnalyzeOptions {
            detectors: o.detectors,
            categories: o.categories,
        },
        o.model_judged,
    )
}

/// The original a revision was made from, and its findings' spans, checked against it.
pub fn revision_of(r: pb::RevisionOf, limits: &Limits) -> Result<(String, Vec<Flagged>), Status> {
    let original = r.original_summary;
    if original.trim().is_empty() {
        return Err(invalid_field(
            "revision_of.original_summary",
            "must not be empty",
        ));
    }
    if original.len() > limits.max_summary_bytes {
        return Err(invalid_field(
            "revision_of.original_summary",
            format!(
                "{} bytes is over the limit of {}",
                original.len(),
                limits.max_summary_bytes
            ),
        ));
    }
    let mut flagged = Vec::with_capacity(r.original_findings.len());
    for (i, f) in r.original_findings.iter().enumerate() {
        let (start, end) = f
            .summary_span
            .as_ref()
            .map_or((0, 0), |s| (s.start as usize, s.end as usize));
        if start > end || end > original.len() {
            return Err(invalid_field(
                &format!("revision_of.original_findings[{i}].summary_span"),
                format!(
                    "{start}..{end} is not a span of the original summary ({} bytes)",
                    original.len()
                ),
            ));
        }
        let category = f.category_id.parse::<CategoryId>().map_err(|_| {
            invalid_field(
                &format!("revision_of.original_findings[{i}].category_id"),
                format!("unknown category id `{}`", f.category_id),
            )
        })?;
        flagged.push(Flagged {
            start,
            end,
            category,
        });
    }
    Ok((original, flagged))
}

pub fn fidelity(v: Verdict) -> pb::Fidelity {
    pb::Fidelity {
        passed: v.passed(),
        close: v.close,
        content_kept: v.figures.content_kept,
        new_word_share: v.figures.new_word_share,
        length_ratio: v.figures.length_ratio,
        refusals: v
            .refusals
            .into_iter()
            .map(|r| pb::FidelityRefusal {
                check: r.check.as_str().to_string(),
                message: r.message,
            })
            .collect(),
    }
}

pub fn analyze_error(e: AnalyzeError) -> Status {
    match e {
        AnalyzeError::InvalidArgument { .. }
        | AnalyzeError::UnknownDetector { .. }
        | AnalyzeError::UnknownCategory { .. } => invalid_field(e.field(), e.to_string()),
        // A bug in a detector: the request was fine, the analyzer was not.
        AnalyzeError::DetectorFailed { .. } => arf_common::status::internal_error("analysis", &e),
    }
}

fn severity(s: Severity) -> pb::Severity {
    match s {
        Severity::Low => pb::Severity::Low,
        Severity::Medium => pb::Severity::Medium,
        Severity::High => pb::Severity::High,
        Severity::Critical => pb::Severity::Critical,
    }
}

fn span(s: TextSpan) -> pb::TextSpan {
    pb::TextSpan {
        start: s.start as u32,
        end: s.end as u32,
        text: s.text,
    }
}

pub fn finding(f: Finding) -> pb::Finding {
    let evidence = match f.evidence {
        Evidence::Turn { turn, span: s } => pb::Evidence {
            none_found: false,
            turn_index: Some(turn as u32),
            span: Some(span(s)),
        },
        Evidence::NotFound => pb::Evidence {
            none_found: true,
            turn_index: None,
            span: None,
        },
        Evidence::NotApplicable => pb::Evidence::default(),
    };
    pb::Finding {
        category_id: f.category.as_str().to_string(),
        severity: severity(f.severity) as i32,
        summary_span: Some(span(f.summary_span)),
        evidence: Some(evidence),
        detector: f.detector,
        confidence: f.confidence,
        explanation: f.explanation,
        rule_fix: f.fix,
    }
}

/// A finding sent back to us (in a Profile request). `field` is its path in the request.
pub fn finding_from_wire(f: pb::Finding, field: &str) -> Result<Finding, Status> {
    let category: CategoryId =
        f.category_id
            .parse()
            .map_err(|e: crate::taxonomy::UnknownCategory| {
                invalid_field(&format!("{field}.category_id"), e.to_string())
            })?;
    let severity = match pb::Severity::try_from(f.severity) {
        Ok(pb::Severity::Low) => Severity::Low,
        Ok(pb::Severity::Medium) => Severity::Medium,
        Ok(pb::Severity::High) => Severity::High,
        Ok(pb::Severity::Critical) => Severity::Critical,
        // Unset: the category's default, as the analyzer would have given.
        Ok(pb::Severity::Unspecified) | Err(_) => category.category().default_severity,
    };
    let s = f.summary_span.unwrap_or_default();
    let summary_span = TextSpan {
        start: s.start as usize,
        end: s.end as usize,
        text: s.text,
    };
    let evidence = match f.evidence {
        Some(e) if e.none_found => Evidence::NotFound,
        Some(pb::Evidence {
            turn_index: Some(turn),
            span: Some(s),
            ..
        }) => Evidence::Turn {
            turn: turn as usize,
            span: TextSpan {
                start: s.start as usize,
                end: s.end as usize,
                text: s.text,
            },
        },
        _ => Evidence::NotApplicable,
    };
    Ok(Finding {
        category,
        severity,
        summary_span,
        evidence,
        detector: f.detector,
        confidence: f.confidence,
        explanation: f.explanation,
        fix: f.rule_fix,
    })
}

pub fn taxonomy(
    t: Taxonomy,
    rule_detectors: &[(&'static str, &'static [CategoryId])],
    judges: &[(&'static str, &'static [CategoryId])],
) -> pb::Taxonomy {
    let all: Vec<_> = rule_detectors.iter().chain(judges).collect();
    pb::Taxonomy {
        version: t.version.to_string(),
        categories: t
            .categories
            .iter()
            .map(|c| pb::Category {
                id: c.id.as_str().to_string(),
                name: c.name.to_string(),
                definition: c.definition.to_string(),
                default_severity: severity(c.default_severity) as i32,
                revision_instruction: c.revision_instruction.to_string(),
                detectors: all
                    .iter()
                    .filter(|(_, cats)| cats.contains(&c.id))
                    .map(|(n, _)| n.to_string())
                    .collect(),
            })
            .collect(),
        detectors: all.iter().map(|(n, _)| n.to_string()).collect(),
        // The server knows; see `get_taxonomy`.
        judge_available: false,
    }
}

pub fn profile(p: CorpusProfile) -> pb::ProfileResponse {
    let markdown = p.to_markdown(50);
    let rate = |category: CategoryId, summaries: usize, of: usize| pb::CategoryRate {
        category_id: category.as_str().to_string(),
        summaries: summaries as u32,
        rate: if of == 0 {
            0.0
        } else {
            summaries as f64 / of as f64
        },
    };
    pb::ProfileResponse {
        plan_omitted: p.plan_omitted as u32,
        summaries: p.summaries as u32,
        flagged: p.flagged as u32,
        categories: p
            .categories
            .iter()
            .map(|c| rate(c.category, c.summaries, p.summaries))
            .collect(),
        channels: p
            .channels
            .iter()
            .map(|ch| pb::ChannelProfile {
                channel: ch.channel.clone(),
                summaries: ch.summaries as u32,
                flagged: ch.flagged as u32,
                categories: ch
                    .categories
                    .iter()
                    .map(|(c, n)| rate(*c, *n, ch.summaries))
                    .collect(),
            })
            .collect(),
        co_occurrences: p
            .co_occurrence
            .iter()
            .map(|c| pb::CoOccurrence {
                category_a: c.a.as_str().to_string(),
                category_b: c.b.as_str().to_string(),
                summaries: c.summaries as u32,
            })
            .collect(),
        exemplars: p
            .categories
            .iter()
            .map(|c| pb::Exemplars {
                category_id: c.category.as_str().to_string(),
                conversation_ids: c.exemplars.clone(),
            })
            .collect(),
        revision_plan: p
            .revision_plan
            .into_iter()
            .map(|item| pb::RevisionTarget {
                conversation_id: item.summary_id,
                category_ids: item
                    .instructions
                    .iter()
                    .map(|i| i.category.as_str().to_string())
                    .collect(),
                instructions: item
                    .instructions
                    .into_iter()
                    .map(|i| pb::RevisionInstruction {
                        category_id: i.category.as_str().to_string(),
                        instruction: i.instruction.to_string(),
                    })
                    .collect(),
            })
            .collect(),
        markdown,
        taxonomy_version: p.taxonomy_version.to_string(),
    }
}
