//! The run report: a Markdown page with SVG charts a person would rather look at than read.
//! Built from the store (items, counts, events), so it can be regenerated at any time.

mod compare;
pub mod effect;
mod gate;
mod judge;
mod scores;
mod svg;

use compare::{SAMPLES, comparison, stage_times, summaries};
pub use scores::score_cards;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use arf_proto::v1 as pb;

use crate::store::Unimproved;
use crate::store::evaluation::Evaluation;
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
    /// Personal data replaced in the rows, per kind (`privacy: SCRUB_PII`).
    pub pii_scrubbed: BTreeMap<String, u32>,
}

/// What the run did with personal data, in a line.
fn privacy(md: &mut String, config: &pb::RunConfig, scrubbed: &BTreeMap<String, u32>) {
    if config.privacy() != pb::Privacy::ScrubPii {
        return;
    }
    let found = if scrubbed.is_empty() {
        "none was found".to_string()
    } else {
        let kinds: Vec<String> = scrubbed.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!("values replaced: {}", kinds.join(", "))
    };
    let _ = writeln!(
        md,
        "Personal data was replaced by typed placeholders before the rows were stored; {found}.\n"
    );
}

/// Per category, how many of the summaries counted name it among their findings.
#[derive(Default)]
struct CategoryRates {
    counts: BTreeMap<String, usize>,
    n: usize,
}

impl CategoryRates {
    fn add(&mut self, findings: Option<&[pb::Finding]>) {
        self.n += 1;
        let mut categories: Vec<&str> = findings
            .unwrap_or_default()
            .iter()
            .map(|f| f.category_id.as_str())
            .collect();
        categories.sort_unstable();
        categories.dedup();
        for c in categories {
            *self.counts.entry(c.to_string()).or_default() += 1;
        }
    }

    /// Category -> share of the summaries counted.
    fn rates(&self) -> BTreeMap<String, f64> {
        let n = self.n.max(1) as f64;
        self.counts
            .iter()
            .map(|(c, &k)| (c.clone(), k as f64 / n))
            .collect()
    }
}

/// What the report needs of a run's items, gathered one page at a time so that its memory is
/// bounded by a page and the evaluations, not by the run.
struct Tally {
    gate: gate::GateTally,
    policy: Unimproved,
    /// Teacher errors over the analyzed training items: as written, after revision, and in
    /// the summaries trained on.
    before: CategoryRates,
    after: CategoryRates,
    trained: CategoryRates,
    outcomes: BTreeMap<&'static str, f64>,
    /// Every held-out evaluation, without its summaries' text past the first few.
    evaluations: Vec<Evaluation>,
    /// The first held-out conversations evaluated, whole, for a person to read.
    samples: Vec<ItemRecord>,
}

impl Tally {
    fn new(policy: Unimproved) -> anyhow::Result<Self> {
        Ok(Self {
            gate: gate::GateTally::new(policy)?,
            policy,
            before: CategoryRates::default(),
            after: CategoryRates::default(),
            trained: CategoryRates::default(),
            outcomes: BTreeMap::new(),
            evaluations: Vec::new(),
            samples: Vec::new(),
        })
    }

    fn add(&mut self, item: ItemRecord) {
        self.gate.add(&item);
        if item.split == Split::Holdout {
            if let Some(evaluation) = &item.evaluation {
                let mut evaluation = evaluation.clone();
                if self.samples.len() < SAMPLES {
                    self.samples.push(item);
                } else {
                    evaluation.forget_texts();
                }
                self.evaluations.push(evaluation);
            }
            return;
        }
        let Some(analysis) = &item.analysis else {
            return;
        };
        if let Some(o) = item.revision_outcome {
            *self.outcomes.entry(o.as_str()).or_default() += 1.0;
        }
        let final_findings = match item.revision_outcome {
            Some(o) if o.is_revised() => item.revised_analysis.as_ref().map(|a| &a.findings[..]),
            _ => Some(&analysis.findings[..]),
        };
        self.before.add(Some(&analysis.findings));
        self.after.add(final_findings);
        if item
            .revision_outcome
            .is_some_and(|o| o.trained_on(self.policy))
        {
            self.trained.add(final_findings);
        }
    }
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
    let policy = Unimproved::of(&run.config);
    let mut tally = Tally::new(policy)?;
    let mut after = 0;
    loop {
        let page = store.item_page(&run.id, after).await?;
        let Some(&(_, last)) = page.last() else { break };
        after = last;
        page.into_iter().for_each(|(item, _)| tally.add(item));
    }
    let counts = store.counts(&run.id, policy).await?;
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
    let pii_scrubbed = store.pii_scrubbed(&run.id).await?;
    privacy(&mut md, &run.config, &pii_scrubbed);

    let Tally {
        gate,
        before,
        after,
        trained,
        outcomes,
        evaluations,
        samples,
        ..
    } = tally;
    let gate = gate.finish();
    if !gate.warning.is_empty() {
        let _ = writeln!(md, "> **Warning:** {}.\n", gate.warning);
    }

    // Teacher errors before and after revision, over the training items, and in the summaries
    // actually trained on (clean and accepted ones, and unimproved ones if the policy keeps them).
    let n = before.n;
    let (before, after, trained) = (before.rates(), after.rates(), trained.rates());
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
    let (overall, per_channel) = score_cards(&evaluations);
    let judge_uninformative = judge::uninformative(&evaluations, &overall);
    let differences = effect::differences(&evaluations);
    if !overall.is_empty() {
        comparison(
            &mut md,
            &mut files,
            &overall,
            &per_channel,
            judge_uninformative.as_deref(),
        );
        effect::section(&mut md, &differences);
        summaries(&mut md, &samples);
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
        pii_scrubbed,
    })
}
