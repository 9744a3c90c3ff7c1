//! The run report: a Markdown page with SVG charts a person would rather look at than read.
//! Built from the store (items, counts, events), so it can be regenerated at any time.

mod compare;
pub mod effect;
mod gate;
mod judge;
mod scores;
mod svg;

use compare::{comparison, stage_times, summaries};
pub use scores::score_cards;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use arf_proto::v1 as pb;

use crate::store::Unimproved;
use crate::store::{ItemRecord, RunRecord, Split, Store};

pub struct ReportFile {
    pub name: String,
    pub content: String,
}

pub struct Report {
    pub markdown: String,
    pub files: Vec<ReportFile>,
    /// Every evaluated model on the held-out conversations (empty before evaluation).
    pub overall: Vec<pb::ScoreCard>,
    pub per_channel: Vec<pb::ChannelScores>,
    pub gate: pb::GateQuality,
    /// Why the judge's ratings are not to be read as scores, when they are not.
    pub judge_uninformative: Option<String>,
    /// Paired differences between models, with bootstrap CIs.
    pub differences: Vec<pb::Difference>,
}

/// Category -> share of `items` whose findings (picked by `findings`) include it.
fn category_rates<'a>(
    items: impl Iterator<Item = &'a ItemRecord>,
    findings: impl Fn(&ItemRecord) -> Option<Vec<pb::Finding>>,
) -> (BTreeMap<String, f64>, usize) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut n = 0;
    for item in items {
        n += 1;
        let Some(found) = findings(item) else {
            continue;
        };
        let mut categories: Vec<&str> = found.iter().map(|f| f.category_id.as_str()).collect();
        categories.sort_unstable();
        categories.dedup();
        for c in categories {
            *counts.entry(c.to_string()).or_default() += 1;
        }
    }
    (
        counts
            .into_iter()
            .map(|(c, k)| (c, if n == 0 { 0.0 } else { k as f64 / n as f64 }))
            .collect(),
        n,
    )
}

/// Training steps' loss and evaluation loss from one job's relayed trainer events.
fn loss_curves(events: &[pb::RunEvent], job_id: &str) -> (Vec<(f64, f64)>, Vec<(f64, f64)>) {
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for e in events {
        if let Some(pb::run_event::Kind::Training(job)) = &e.kind {
            if job.job_id != job_id {
                continue;
            }
            match &job.kind {
                Some(pb::job_event::Kind::Step(s)) => train.push((s.step as f64, s.loss)),
                Some(pb::job_event::Kind::Eval(s)) => eval.push((s.step as f64, s.eval_loss)),
                _ => {}
            }
        }
    }
    (train, eval)
}

pub async fn build(store: &Store, run: &RunRecord) -> anyhow::Result<Report> {
    // Page by page: a large run's report is many short reads, not one long one.
    let items = store.items_in_pages(&run.id).await?;
    let counts = store.counts(&run.id, Unimproved::of(&run.config)).await?;
    let events = store
        .events_where(&run.id, |e| {
            matches!(
                e.kind,
                Some(pb::run_event::Kind::Stage(_) | pb::run_event::Kind::Training(_))
            )
        })
        .await?;
    let mut md = String::new();
    let mut files = Vec::new();

    let _ = writeln!(md, "# ARF run `{}`: {}\n", run.id, run.display_name);
    let _ = writeln!(
        md,
        "State: **{}**{}\n",
        run.state.as_str_name(),
        if run.error.is_empty() {
            String::new()
        } else {
            format!(" ({})", run.error)
        }
    );
    let _ = writeln!(
        md,
        "| rows | bad rows | analyzed | flagged | revisions accepted | rejected | held out | evaluated |"
    );
    let _ = writeln!(
        md,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let _ = writeln!(
        md,
        "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
        counts.rows,
        counts.bad_rows,
        counts.analyzed,
        counts.flagged,
        counts.revisions_accepted,
        counts.revisions_rejected,
        counts.held_out,
        counts.evaluated
    );

    let policy = Unimproved::of(&run.config);
    let gate = gate::gate_quality(&items, policy)?;
    if !gate.warning.is_empty() {
        let _ = writeln!(md, "> **Warning:** {}.\n", gate.warning);
    }

    // Teacher errors before and after revision, over the training items, and in the summaries
    // actually trained on (clean and accepted ones, and unimproved ones if the policy keeps them).
    let train: Vec<&ItemRecord> = items
        .iter()
        .filter(|i| i.split == Split::Train && i.analysis.is_some())
        .collect();
    let final_findings = |i: &ItemRecord| match i.revision_outcome {
        Some(o) if o.is_revised() => i.revised_analysis.as_ref().map(|a| a.findings.clone()),
        _ => i.analysis.as_ref().map(|a| a.findings.clone()),
    };
    let trained_on = |i: &ItemRecord| i.revision_outcome.is_some_and(|o| o.trained_on(policy));
    let (before, n) = category_rates(train.iter().copied(), |i| {
        i.analysis.as_ref().map(|a| a.findings.clone())
    });
    let (after, _) = category_rates(train.iter().copied(), final_findings);
    let (trained, _) = category_rates(
        train.iter().copied().filter(|i| trained_on(i)),
        final_findings,
    );
    if n > 0 {
        let labels: Vec<String> = before
            .keys()
            .chain(after.keys())
            .chain(trained.keys())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let rates = |m: &BTreeMap<String, f64>| {
            labels
                .iter()
                .map(|l| m.get(l).copied().unwrap_or(0.0))
                .collect::<Vec<_>>()
        };
        let series = ["teacher", "after revision", "training set"];
        files.push(ReportFile {
            name: "errors_before_after.svg".into(),
            content: svg::grouped_bars(
                "Summaries with each error: teacher, after revision, trained on",
                &labels,
                &series,
                &[rates(&before), rates(&after), rates(&trained)],
                true,
            ),
        });
        let _ = writeln!(
            md,
            "## What the teacher gets wrong\n\n![errors before and after revision](errors_before_after.svg)\n"
        );
        let _ = writeln!(
            md,
            "Share of training summaries with each error: as the teacher wrote them, after revision (accepted \
            revisions replace them), and in the training set itself (what the student learns from).\n"
        );
        let _ = writeln!(
            md,
            "| category | teacher | after revision | training set |\n| --- | ---: | ---: | ---: |"
        );
        let pct = |m: &BTreeMap<String, f64>, l: &str| m.get(l).unwrap_or(&0.0) * 100.0;
        for l in &labels {
            let _ = writeln!(
                md,
                "| {l} | {:.1}% | {:.1}% | {:.1}% |",
                pct(&before, l),
                pct(&after, l),
                pct(&trained, l)
            );
        }
        md.push('\n');
    }

    let mut outcomes: BTreeMap<&str, f64> = BTreeMap::new();
    for i in &train {
        if let Some(o) = i.revision_outcome {
            *outcomes.entry(o.as_str()).or_default() += 1.0;
        }
    }
    if !outcomes.is_empty() {
        let labels: Vec<String> = outcomes.keys().map(|k| k.to_string()).collect();
        files.push(ReportFile {
            name: "revisions.svg".into(),
            content: svg::grouped_bars(
                "Revision outcomes (training items)",
                &labels,
                &["items"],
                &[outcomes.values().copied().collect()],
                false,
            ),
        });
        let _ = writeln!(md, "## Revisions\n\n![revision outcomes](revisions.svg)\n");
    }
    if !outcomes.is_empty() {
        gate::section(&mut md, &gate);
    }

    let curves: Vec<(String, Vec<(f64, f64)>)> = [
        ("student", &run.training_job_id),
        ("unrevised student", &run.baseline_job_id),
    ]
    .into_iter()
    .filter(|(_, job)| !job.is_empty())
    .flat_map(|(name, job)| {
        let (train, eval) = loss_curves(&events, job);
        [
            (format!("{name}: training loss"), train),
            (format!("{name}: evaluation loss"), eval),
        ]
    })
    .filter(|(_, points)| !points.is_empty())
    .collect();
    if !curves.is_empty() {
        let series: Vec<(&str, Vec<(f64, f64)>)> = curves
            .iter()
            .map(|(n, p)| (n.as_str(), p.clone()))
            .collect();
        files.push(ReportFile {
            name: "loss.svg".into(),
            content: svg::lines("Student training", &series, "step"),
        });
        let baseline = if run.baseline_job_id.is_empty() {
            String::new()
        } else {
            format!(
                "; on the teacher's unrevised summaries, job `{}`",
                run.baseline_job_id
            )
        };
        let _ = writeln!(
            md,
            "## Fine-tuning\n\nOn the ARF-refined data, training job `{}`{baseline}.\n\n![loss curves](loss.svg)\n",
            run.training_job_id
        );
    }
    let (overall, per_channel) = score_cards(&items);
    let judge_uninformative = judge::uninformative(&items, &overall);
    let differences = effect::differences(&items);
    if !overall.is_empty() {
        comparison(
            &mut md,
            &mut files,
            &overall,
            &per_channel,
            judge_uninformative.as_deref(),
        );
        effect::section(&mut md, &differences);
        summaries(&mut md, &items);
    }
    stage_times(&mut md, store, run, &events).await?;
    Ok(Report {
        markdown: md,
        files,
        overall,
        per_channel,
        gate,
        judge_uninformative,
        differences,
    })
}
