//! Stage 2: the editor rewrites each flagged training summary, told exactly which errors to fix
//! (the taxonomy's instruction per flagged category); the analyzer re-checks every revision, and
//! only one that passes its fidelity guard (still a faithful summary: the original's unflagged
//! content kept, nothing invented, not degenerate) and is better under the run's acceptance rule
//! (by default: a strictly lower severity-weighted error score) is accepted. Otherwise the next
//! round tries again from the teacher's summary, sampling (the first round is greedy, so a
//! second greedy round would only repeat it), up to the configured rounds. Always revising the
//! teacher's summary keeps every prompt as small as the first.
//!
//! With `repair: RULES_THEN_MODEL`, the fixes the detectors determine are tried first
//! (repair.rs): gated the same way, an accepted one is "repaired by rule" and no editor is asked.
//! A summary whose only errors are personal data is always repaired so.

use std::collections::HashMap;
use std::sync::Arc;

use arf_common::dataset::conversation_to_wire;
use arf_proto::v1 as pb;
use pb::run_event::Kind;
use tracing::Instrument;

use super::waiting::{ANALYZER, EDITOR};
use super::{RunError, StageRun, item_trace, repair};
use crate::store::{ItemRecord, LosingCandidate, RevisionOutcome};
use crate::store::{Pending, Revised};

const BATCH: usize = 64;
const DEFAULT_ROUNDS: u32 = 2;
/// Findings shown to the editor per summary: a dozen say what to fix; hundreds would only
/// fill its context.
const MAX_FINDINGS: usize = 12;
const RETRY_TEMPERATURE: f32 = 0.7;
/// Best-of-n beyond this costs more editor time than it can win back.
pub const MAX_REVISION_CANDIDATES: u32 = 8;

pub async fn run(s: StageRun<'_>) -> Result<(), RunError> {
    let (p, run_id, _, token) = s.parts();
    let instructions = p
        .call(run_id, token, ANALYZER, || {
            p.clients.analyzer.revision_instructions()
        })
        .await?
        .map_err(|s| {
            anyhow::anyhow!(
                "the analyzer gave no taxonomy: {}: {}",
                s.code(),
                s.message()
            )
        })?;
    let instructions = Arc::new(instructions);
    // Enough calls in flight to keep every replica busy, and no more (the replicas shed the
    // rest): counted again for each batch, so replicas that join mid-stage get work.
    let concurrency = || (p.clients.editors.replica_count() * 4).max(2);
    p.drain_pending(
        token,
        concurrency,
        || p.store().pending(run_id, Pending::Revision, BATCH),
        |item| revise_item(s, &instructions, item),
    )
    .await
}

async fn revise_item(
    s: StageRun<'_>,
    instructions: &HashMap<String, String>,
    item: ItemRecord,
) -> Result<(), RunError> {
    let (p, run_id, config, token) = s.parts();
    p.check(token)?;
    let id = item.conversation.id.clone();
    let analysis = item.analysis.clone().unwrap_or_default();
    let done = async |outcome: RevisionOutcome,
                      summary: Option<&str>,
                      rounds: u32,
                      revised: Option<&pb::AnalyzeResponse>,
                      losing: &[LosingCandidate]|
           -> Result<(), RunError> {
        let findings = revised.map_or(analysis.findings.len(), |r| r.findings.len()) as u32;
        let event = Kind::Item(pb::ItemProgress {
            conversation_id: id.clone(),
            stage: pb::Stage::Revise as i32,
            outcome: outcome.as_str().into(),
            findings,
        });
        p.saved(
            p.store()
                .save_revision(
                    run_id,
                    &id,
                    Revised {
                        outcome,
                        summary,
                        rounds,
                        analysis: revised,
                        losing,
                    },
                    event,
                )
                .await?,
        );
        Ok(())
    };
    if !analysis.detector_failures.is_empty() {
        return done(RevisionOutcome::Failed, None, 0, None, &[]).await;
    }
    if analysis.findings.is_empty() {
        return done(RevisionOutcome::Clean, None, 0, None, &[]).await;
    }

    let span = item_trace::resume("arf.item.revise", run_id, &id, item.trace_parent.as_deref());
    // A fix by rule that is not better (one the guard refused, findings left that weigh more)
    // leaves the editor to revise the teacher's summary as without rules.
    if repair::tried_first(config.repair(), &analysis.findings)
        && let Some(repaired) = repair::by_rule(&item.teacher_summary, &analysis.findings)
        && let Ok(recheck) = recheck(s, &item, &analysis, &repaired, &span).await?
        && is_better(config.acceptance(), &analysis, &recheck)
    {
        return done(
            RevisionOutcome::Repaired,
            Some(&repaired),
            0,
            Some(&recheck),
            &[],
        )
        .await;
    }
    let conversation = conversation_to_wire(&item.conversation);
    let rounds = if config.revision_rounds == 0 {
        DEFAULT_ROUNDS
    } else {
        config.revision_rounds
    };
    let candidates = config.revision_candidates.max(1);
    // What the next round revises: the teacher's summary, then the best candidate so far.
    let mut current = (item.teacher_summary.clone(), analysis.clone());
    let mut tally = Tally::default();
    for round in 1..=rounds {
        p.check(token)?;
        let findings: Vec<pb::Finding> = current
            .1
            .findings
            .iter()
            .take(MAX_FINDINGS)
            .cloned()
            .collect();
        let round_instructions = instructions_for(&findings, instructions);
        let request = |sample: u32| {
            // The first round's first candidate is greedy; every other one is sampled.
            let sampling = (round > 1 || sample > 0).then_some((RETRY_TEMPERATURE, 0.95));
            pb::ReviseRequest {
                conversation: Some(conversation.clone()),
                summary: current.0.clone(),
                instructions: round_instructions.clone(),
                findings: findings.clone(),
                params: Some(pb::GenerationParams {
                    max_tokens: config.revision_max_tokens,
                    temperature: sampling.map(|s| s.0),
                    top_p: sampling.map(|s| s.1),
                    stop: vec![],
                }),
            }
        };
        let (item, analysis) = (&item, &analysis);
        let sample = |sample: u32| {
            let request = request(sample);
            let span = span.clone();
            async move {
                let revised = p
                    .call(run_id, token, EDITOR, || {
                        p.clients.editors.revise(&request).instrument(span.clone())
                    })
                    .await?;
                let revised = match revised {
                    Ok(r) => r.revised_summary,
                    // One failed sample (output cut off, refused, ...), not a failed item.
                    Err(s) => return Ok(Sample::Failed(format!("{}: {}", s.code(), s.message()))),
                };
                Ok::<_, RunError>(match recheck(s, item, analysis, &revised, &span).await? {
                    Ok(r) => Sample::Checked(revised, r),
                    // An empty or oversized revision is simply not better.
                    Err(_) => Sample::Unchecked,
                })
            }
        };
        // The first candidate goes alone, the others together after it: they ask the same
        // prompt, which an editor with a prefix cache then holds, so a round prefills it once
        // instead of once per candidate (the prompt, not the few words of a span, is the cost).
        let mut samples = vec![sample(0).await?];
        for rest in futures::future::join_all((1..candidates).map(sample)).await {
            samples.push(rest?);
        }
        let best = best_of(samples, &mut tally);
        let Some((summary, recheck)) = best else {
            continue;
        };
        if is_better(config.acceptance(), analysis, &recheck) {
            let losing = tally.beaten_by(&summary, &recheck, &item.teacher_summary);
            return done(
                RevisionOutcome::Accepted,
                Some(&summary),
                round,
                Some(&recheck),
                &losing,
            )
            .await;
        }
        if ranks_above(&recheck, &current.1) {
            current = (summary, recheck); // closer: the next round fixes what is left of it
        }
    }
    if !tally.checked_any
        && let Some(e) = tally.last_error
    {
        // Not one sample came back from the editor: the item could not be revised.
        p.warn(run_id, format!("the editor could not revise {id}: {e}"))
            .await?;
        return done(RevisionOutcome::Failed, None, rounds, None, &[]).await;
    }
    done(RevisionOutcome::Rejected, None, rounds, None, &[]).await
}

/// One candidate revision, as far as it got.
enum Sample {
    /// The editor gave none (the reason).
    Failed(String),
    /// The analyzer could not check it.
    Unchecked,
    Checked(String, pb::AnalyzeResponse),
}

/// What a revision's samples came to, across its rounds.
#[derive(Debug, Default)]
struct Tally {
    /// Some sample reached the analyzer.
    checked_any: bool,
    /// Why the editor last gave no sample.
    last_error: Option<String>,
    /// Every candidate the analyzer checked: its text, its [`rank`] and whether the fidelity
    /// guard passed it.
    checked: Vec<(String, (f64, usize), bool)>,
}

impl Tally {
    /// The checked candidates `winner` (its analysis `ranked`) beat, once each: those the
    /// fidelity guard refused and those that rank below it. Texts equal to the winner's or to
    /// the teacher's (already a pair of its own) are left out.
    fn beaten_by(
        &self,
        winner: &str,
        ranked: &pb::AnalyzeResponse,
        teacher: &str,
    ) -> Vec<LosingCandidate> {
        let mut losing: Vec<LosingCandidate> = Vec::new();
        for (summary, key, faithful) in &self.checked {
            let beaten = !faithful || rank(ranked) < *key;
            if beaten
                && summary != winner
                && summary != teacher
                && !losing.iter().any(|c| &c.summary == summary)
            {
                losing.push(LosingCandidate {
                    summary: summary.clone(),
                    error_score: key.0,
                    faithful: *faithful,
                });
            }
        }
        losing
    }
}

/// The round's best candidate among those the guard passed.
/// The analyzer's check of a revision (`revised`) against the teacher's summary and its
/// findings: waited out while the analyzer is away; its refusal is the inner `Err`.
async fn recheck(
    s: StageRun<'_>,
    item: &ItemRecord,
    analysis: &pb::AnalyzeResponse,
    revised: &str,
    span: &tracing::Span,
) -> Result<Result<pb::AnalyzeResponse, tonic::Status>, RunError> {
    let (p, run_id, config, token) = s.parts();
    p.call(run_id, token, ANALYZER, || {
        p.clients
            .analyzer
            .analyze_revision(
                &item.conversation,
                analysis,
                &item.teacher_summary,
                revised,
                config.analyzer.clone(),
            )
            .instrument(span.clone())
    })
    .await
}

fn best_of(samples: Vec<Sample>, tally: &mut Tally) -> Option<(String, pb::AnalyzeResponse)> {
    let mut best: Option<(String, pb::AnalyzeResponse)> = None;
    for sample in samples {
        match sample {
            Sample::Failed(e) => tally.last_error = Some(e),
            Sample::Unchecked => tally.checked_any = true,
            Sample::Checked(summary, recheck) => {
                tally.checked_any = true;
                tally
                    .checked
                    .push((summary.clone(), rank(&recheck), is_faithful(&recheck)));
                if is_faithful(&recheck)
                    && best.as_ref().is_none_or(|b| ranks_above(&recheck, &b.1))
                {
                    best = Some((summary, recheck));
                }
            }
        }
    }
    best
}

/// A revision the analyzer fully checked and the fidelity guard passed: only such a candidate
/// can win a round.
fn is_faithful(revised: &pb::AnalyzeResponse) -> bool {
    revised.detector_failures.is_empty() && revised.fidelity.as_ref().is_some_and(|f| f.passed)
}

/// Whether `a` is a better candidate than `b`: a lower weighted score, then fewer findings.
fn ranks_above(a: &pb::AnalyzeResponse, b: &pb::AnalyzeResponse) -> bool {
    rank(a) < rank(b)
}

/// A candidate's place, lowest best: its weighted error score, then its number of findings.
fn rank(a: &pb::AnalyzeResponse) -> (f64, usize) {
    (a.error_score, a.findings.len())
}

/// Whether a revision beats the teacher's summary: the fidelity guard passed it (it is still a
/// faithful summary of the same conversation; fewer findings alone would reward saying
/// nothing), and it is better under the run's acceptance rule.
fn is_better(
    rule: pb::AcceptanceRule,
    teacher: &pb::AnalyzeResponse,
    revised: &pb::AnalyzeResponse,
) -> bool {
    use pb::AcceptanceRule::*;
    if !is_faithful(revised) {
        // Not fully checked (no evidence that it is better), or it dropped content, invented
        // some, or degenerated.
        return false;
    }
    match rule {
        Unspecified | LowerWeightedScore => revised.error_score < teacher.error_score,
        FewerFindings => {
            revised.findings.len() < teacher.findings.len()
                && revised.error_score <= teacher.error_score
        }
        Clean => revised.findings.is_empty(),
    }
}

/// The taxonomy's instruction for each category flagged, once each.
fn instructions_for(
    findings: &[pb::Finding],
    taxonomy: &HashMap<String, String>,
) -> Vec<pb::RevisionInstruction> {
    let mut seen: Vec<&str> = Vec::new();
    findings
        .iter()
        .filter_map(|f| {
            if seen.contains(&f.category_id.as_str()) {
                return None;
            }
            seen.push(&f.category_id);
            taxonomy
                .get(&f.category_id)
                .map(|i| pb::RevisionInstruction {
                    category_id: f.category_id.clone(),
                    instruction: i.clone(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::AcceptanceRule::*;

    fn analysis(findings: usize, score: f64) -> pb::AnalyzeResponse {
        pb::AnalyzeResponse {
            findings: vec![pb::Finding::default(); findings],
            error_score: score,
            fidelity: Some(pb::Fidelity {
                passed: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_rule_accepts_only_what_it_promises() {
        let teacher = analysis(2, 5.0);
        // One high-severity finding replaces two low ones: fewer findings, a worse score.
        let fewer_but_worse = analysis(1, 6.0);
        let lighter = analysis(2, 3.0);
        let clean = analysis(0, 0.0);
        assert!(!is_better(Unspecified, &teacher, &fewer_but_worse));
        assert!(is_better(LowerWeightedScore, &teacher, &lighter));
        assert!(!is_better(FewerFindings, &teacher, &fewer_but_worse));
        assert!(!is_better(FewerFindings, &teacher, &lighter));
        assert!(is_better(FewerFindings, &teacher, &analysis(1, 2.0)));
        assert!(!is_better(Clean, &teacher, &lighter));
        assert!(is_better(Clean, &teacher, &clean));
        let unchecked = pb::AnalyzeResponse {
            detector_failures: vec![Default::default()],
            ..clean
        };
        assert!(
            !is_better(Clean, &teacher, &unchecked),
            "a revision not fully checked is never accepted"
        );
    }

    #[test]
    fn best_of_n_picks_the_best_faithful_candidate_and_survives_failed_samples() {
        let refused = |score| pb::AnalyzeResponse {
            fidelity: Some(pb::Fidelity::default()),
            ..analysis(0, score)
        };
        let mut tally = Tally::default();
        let best = best_of(
            vec![
                Sample::Failed("DEADLINE_EXCEEDED: cut off".into()),
                Sample::Checked("three".into(), analysis(2, 3.0)),
                Sample::Checked("refused".into(), refused(0.0)),
                Sample::Checked("two".into(), analysis(1, 2.0)),
                Sample::Checked("two, more findings".into(), analysis(3, 2.0)),
                Sample::Unchecked,
            ],
            &mut tally,
        );
        assert_eq!(best.map(|b| b.0).as_deref(), Some("two"));
        assert!(tally.checked_any, "a failed sample does not fail the item");

        let mut tally = Tally::default();
        assert!(best_of(vec![Sample::Failed("x".into())], &mut tally).is_none());
        assert!(!tally.checked_any && tally.last_error.as_deref() == Some("x"));
    }

    /// Best-of-n's losers are preference pairs beside the winner: each candidate the guard
    /// refused or that ranks below it, once, and never the winner's or the teacher's own text.
    #[test]
    fn an_accepted_revision_keeps_the_candidates_it_beat() {
        let refused = pb::AnalyzeResponse {
            fidelity: Some(pb::Fidelity::default()),
            ..analysis(0, 0.0)
        };
        let mut tally = Tally::default();
        let (winner, ranked) = best_of(
            vec![
                Sample::Checked("worse".into(), analysis(2, 3.0)),
                Sample::Checked("refused, lower score".into(), refused),
                Sample::Checked("best".into(), analysis(1, 1.0)),
                Sample::Checked("tied".into(), analysis(1, 1.0)),
                Sample::Checked("worse".into(), analysis(2, 3.0)),
                Sample::Checked("the teacher's".into(), analysis(2, 5.0)),
                Sample::Checked("best".into(), analysis(1, 1.0)),
            ],
            &mut tally,
        )
        .unwrap();
        assert_eq!(winner, "best");
        let losing: Vec<_> = tally
            .beaten_by(&winner, &ranked, "the teacher's")
            .into_iter()
            .map(|c| (c.summary, c.faithful))
            .collect();
        assert_eq!(
            losing,
            [
                ("worse".to_string(), true),
                ("refused, lower score".to_string(), false)
            ]
        );
    }

    #[test]
    fn no_rule_accepts_what_the_fidelity_guard_refused() {
        let teacher = analysis(2, 5.0);
        let refused = pb::AnalyzeResponse {
            fidelity: Some(pb::Fidelity {
                passed: false,
                ..Default::default()
            }),
            ..analysis(0, 0.0)
        };
        let unguarded = pb::AnalyzeResponse {
            fidelity: None,
            ..analysis(0, 0.0)
        };
        for rule in [Unspecified, LowerWeightedScore, FewerFindings, Clean] {
            assert!(!is_better(rule, &teacher, &refused), "{rule:?}");
            assert!(!is_better(rule, &teacher, &unguarded), "{rule:?}");
        }
    }
}
