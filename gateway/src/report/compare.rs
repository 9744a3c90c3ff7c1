//! The report's evaluation sections: the models side by side (base zero-shot, unrevised student,
//! ARF student, teacher, where the run has each), a sample of held-out summaries a person can
//! read and judge, and what each stage cost in time (and the teacher in tokens).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use arf_proto::v1 as pb;

use super::{ReportFile, svg};
use crate::store::evaluation::Model;
use crate::store::{ItemRecord, RunRecord, Split, Store};

/// Held-out conversations printed in full with every model's summary.
pub const SAMPLES: usize = 8;

fn title_of(card: &pb::ScoreCard) -> &'static str {
    Model::ALL
        .into_iter()
        .find(|m| m.card_name() == card.model)
        .map_or("?", Model::title)
}

fn judge_cell(c: &pb::ScoreCard, uninformative: bool) -> String {
    if uninformative && c.judge_mean > 0.0 {
        "uninformative".into()
    } else if c.judge_mean > 0.0 {
        format!("{:.2}", c.judge_mean)
    } else {
        "n/a".into()
    }
}

pub fn comparison(
    md: &mut String,
    files: &mut Vec<ReportFile>,
    overall: &[pb::ScoreCard],
    per_channel: &[pb::ChannelScores],
    judge_uninformative: Option<&str>,
) {
    let no_judge = judge_uninformative.is_some();
    let labels: Vec<String> = overall
        .iter()
        .flat_map(|c| c.error_rates.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let series: Vec<&str> = overall.iter().map(title_of).collect();
    let values: Vec<Vec<f64>> = overall
        .iter()
        .map(|c| {
            labels
                .iter()
                .map(|l| c.error_rates.get(l).copied().unwrap_or(0.0))
                .collect()
        })
        .collect();
    files.push(ReportFile {
        name: "student_vs_teacher.svg".into(),
        content: svg::grouped_bars(
            "Held-out summaries with each error, per model",
            &labels,
            &series,
            &values,
            true,
        ),
    });
    let n = overall.first().map_or(0, |c| c.summaries);
    let _ = writeln!(
        md,
        "## The models on {n} held-out conversations\n\n![errors per model](student_vs_teacher.svg)\n"
    );
    let _ = writeln!(
        md,
        "ROUGE F-measures against the human references; reference NLL is the model's mean per-token \
         negative log-likelihood of those references (nats, lower is better); error rates are shares \
         of summaries the analyzer flags.\n"
    );
    let _ = writeln!(
        md,
        "| model | ROUGE-1 | ROUGE-2 | ROUGE-L | reference NLL | worst error category | judge (1-5) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for c in overall {
        let worst = c.error_rates.values().copied().fold(0.0_f64, f64::max);
        let _ = writeln!(
            md,
            "| {} | {:.3} | {:.3} | {:.3} | {} | {:.0}% | {} |",
            title_of(c),
            c.rouge1,
            c.rouge2,
            c.rouge_l,
            c.reference_nll.map_or("n/a".into(), |n| format!("{n:.3}")),
            worst * 100.0,
            judge_cell(c, no_judge)
        );
    }
    if let Some(why) = judge_uninformative {
        let _ = writeln!(
            md,
            "\nThe judge is uninformative on this run, so its ratings are not shown: {why}."
        );
    }
    if !labels.is_empty() {
        let _ = write!(md, "\n| error category |");
        for c in overall {
            let _ = write!(md, " {} |", title_of(c));
        }
        let _ = write!(md, "\n| --- |{}\n", " ---: |".repeat(overall.len()));
        for l in &labels {
            let _ = write!(md, "| {l} |");
            for c in overall {
                let _ = write!(
                    md,
                    " {:.1}% |",
                    c.error_rates.get(l).copied().unwrap_or(0.0) * 100.0
                );
            }
            md.push('\n');
        }
    }
    let _ = writeln!(
        md,
        "\n### Per channel\n\n| channel | model | summaries | ROUGE-1 | ROUGE-2 | ROUGE-L | judge |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    );
    for ch in per_channel {
        for c in &ch.scores {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {} |",
                ch.channel,
                title_of(c),
                c.summaries,
                c.rouge1,
                c.rouge2,
                c.rouge_l,
                judge_cell(c, no_judge)
            );
        }
    }
    md.push('\n');
}

/// A few held-out conversations in full, each model's summary under it, so a person can judge
/// what the numbers mean.
pub fn summaries(md: &mut String, items: &[ItemRecord]) {
    let evaluated: Vec<&ItemRecord> = items
        .iter()
        .filter(|i| i.split == Split::Holdout && i.evaluation.is_some())
        .take(SAMPLES)
        .collect();
    if evaluated.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Read them yourself\n\nThe first {} held-out conversations, with every model's summary.\n",
        evaluated.len()
    );
    for item in evaluated {
        let Some(e) = &item.evaluation else { continue };
        let _ = writeln!(
            md,
            "### `{}` ({})\n",
            item.conversation.id, item.conversation.channel
        );
        for turn in &item.conversation.turns {
            let _ = writeln!(
                md,
                "> **{}**: {}  ",
                turn.role.as_str(),
                one_line(&turn.text)
            );
        }
        md.push('\n');
        if let Some(reference) = item.references.first() {
            let _ = writeln!(md, "- *human reference*: {}", one_line(reference));
        }
        for model in Model::ALL {
            let Some(side) = e.get(model) else { continue };
            let errors = if side.categories.is_empty() {
                "no error found".to_string()
            } else {
                side.categories.join(", ")
            };
            let rouge = side
                .rouge
                .map_or(String::new(), |r| format!(", ROUGE-L {:.2}", r.rouge_l));
            let judge = side.judge.map_or(String::new(), |j| format!(", judge {j}"));
            let _ = writeln!(
                md,
                "- *{}* ({errors}{rouge}{judge}): {}",
                model.title(),
                one_line(&side.summary)
            );
        }
        md.push('\n');
    }
}

fn one_line(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        "(empty)".into()
    } else {
        flat
    }
}

/// Wall time of each stage (from its first start to its last end in the event log), and the
/// teacher's tokens where Generate wrote summaries.
pub async fn stage_times(
    md: &mut String,
    store: &Store,
    run: &RunRecord,
    events: &[pb::RunEvent],
) -> anyhow::Result<()> {
    let mut spans: BTreeMap<i32, (Option<i64>, Option<i64>)> = BTreeMap::new();
    for e in events {
        let (Some(pb::run_event::Kind::Stage(s)), Some(t)) = (&e.kind, &e.time) else {
            continue;
        };
        let ms = t.seconds * 1000 + i64::from(t.nanos) / 1_000_000;
        let entry = spans.entry(s.stage).or_default();
        if s.started {
            entry.0 = Some(entry.0.map_or(ms, |first: i64| first.min(ms)));
        } else {
            entry.1 = Some(ms);
        }
    }
    let order = crate::pipeline::stages(&run.config);
    let rows: Vec<(pb::Stage, f64)> = order
        .into_iter()
        .filter_map(|stage| match spans.get(&(stage as i32)) {
            Some((Some(start), Some(end))) => Some((stage, (end - start) as f64 / 1000.0)),
            _ => None,
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let _ = writeln!(md, "## Time\n\n| stage | wall time (s) |\n| --- | ---: |");
    for (stage, secs) in &rows {
        let _ = writeln!(
            md,
            "| {} | {secs:.1} |",
            crate::pipeline::stage_name(*stage)
        );
    }
    let (generated, usage) = store.generation_totals(&run.id).await?;
    if generated > 0 {
        let _ = writeln!(
            md,
            "\nThe teacher wrote {generated} summaries: {} prompt tokens, {} generated tokens, {:.1} s of generation \
             ({:.1} generated tokens/s per request).",
            usage.input_tokens,
            usage.output_tokens,
            usage.millis as f64 / 1000.0,
            f64::from(usage.output_tokens) / (usage.millis as f64 / 1000.0).max(1e-9)
        );
    }
    md.push('\n');
    Ok(())
}
