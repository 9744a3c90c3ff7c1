//! What a finished run comes to, printed for a person: the counts, whether the revision gate
//! accepted better summaries (a warning when it did not), and the models side by side.
//! `arf demo` and `arf run --watch` end with it.

use arf_common::client::GrpcChannel;
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;

/// Prints the run's outcome; returns the run as it ended.
pub async fn print_outcome(
    client: &mut PipelineClient<GrpcChannel>,
    run_id: &str,
) -> anyhow::Result<pb::Run> {
    let run = client
        .get_run(pb::GetRunRequest {
            run_id: run_id.into(),
        })
        .await?
        .into_inner();
    let c = run.counts.unwrap_or_default();
    println!(
        "\nrun {}: {}{}\n  {} rows, {} flagged, {} revisions accepted, {} rejected, {} held out, {} evaluated",
        run.id,
        pb::RunState::try_from(run.state).map_or("?", |s| s.as_str_name()),
        if run.error.is_empty() {
            String::new()
        } else {
            format!(" ({})", run.error)
        },
        c.rows,
        c.flagged,
        c.revisions_accepted,
        c.revisions_rejected,
        c.held_out,
        c.evaluated,
    );
    let report = client
        .get_report(pb::GetReportRequest {
            run_id: run.id.clone(),
        })
        .await?
        .into_inner();
    if let Some(gate) = &report.gate {
        print_gate(gate);
    }
    print_scores(&report.overall, &report.judge_uninformative);
    print_differences(&report.differences);
    println!("report: {}", report.path);
    Ok(run)
}

fn print_gate(g: &pb::GateQuality) {
    if g.with_references > 0 {
        println!(
            "  accepted revisions against the human references: ROUGE-L {:.1}, the summaries they replaced {:.1} ({} revisions)",
            g.revised_rouge_l, g.original_rouge_l, g.with_references
        );
    }
    if g.guarded > 0 {
        println!(
            "  accepted revisions the fidelity guard scored close to their original: {} of {}",
            g.close, g.guarded
        );
    }
    println!(
        "  distinct training pairs: ARF-refined {}, unrevised {}",
        g.refined_pairs, g.unrevised_pairs
    );
    if !g.warning.is_empty() {
        println!("\n  WARNING: {}\n", g.warning);
    }
}

/// The paired differences with their 95% CIs (ROUGE in points, reference NLL in nats, errors
/// in percentage points), each with its reading.
fn print_differences(differences: &[pb::Difference]) {
    use gateway::report::effect::{ceiling_unseen, verdict};
    if differences.is_empty() {
        return;
    }
    println!("\n  paired differences over held-out conversations, bootstrap 95% CI:");
    for d in differences {
        println!(
            "  {:<24} {:<28} {:>+7.2} ({:+.2} to {:+.2}, n={}){}  {}",
            format!("{} - {}", d.model, d.baseline),
            d.metric,
            d.mean,
            d.ci_low,
            d.ci_high,
            d.conversations,
            d.mcnemar_p
                .map_or(String::new(), |p| format!(", McNemar p={p:.3}")),
            verdict(d)
        );
    }
    if let Some(why) = ceiling_unseen(differences) {
        println!("  {}", why.replace("**", ""));
    }
}

/// The models side by side, as the report's first table has them.
fn print_scores(cards: &[pb::ScoreCard], judge_uninformative: &str) {
    if cards.is_empty() {
        return;
    }
    println!(
        "\n  {:<12} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "model", "summaries", "ROUGE-1", "ROUGE-2", "ROUGE-L", "ref NLL", "judge"
    );
    for c in cards {
        let judge = if !judge_uninformative.is_empty() && c.judge_mean > 0.0 {
            "(uninformative)".into()
        } else if c.judge_mean > 0.0 {
            format!("{:.2}", c.judge_mean)
        } else {
            "n/a".into()
        };
        let nll = c.reference_nll.map_or("n/a".into(), |n| format!("{n:.3}"));
        println!(
            "  {:<12} {:>9} {:>8.3} {:>8.3} {:>8.3} {:>8} {:>6}",
            c.model, c.summaries, c.rouge1, c.rouge2, c.rouge_l, nll, judge
        );
    }
    if !judge_uninformative.is_empty() {
        println!("  the judge is uninformative: {judge_uninformative}");
    }
}
