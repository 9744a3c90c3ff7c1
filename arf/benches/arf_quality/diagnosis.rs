//! Why a refined training set can move the student away from the references while its accepted
//! revisions score higher ROUGE-L (issue 34): per accepted revision, how far it is from the
//! nearest human reference against the original it replaced (word-level edit distance), and how
//! likely the base model finds it as the reply (mean per-token NLL through Editor.Score, the
//! measure Evaluate uses on the references), against the original; per flagged category, with
//! the revisions that deleted words and those that left a bad seam counted apart.

use std::collections::BTreeMap;

use arf_common::client::GrpcChannel;
use arf_proto::v1 as pb;
use arf_proto::v1::editor_client::EditorClient;
use gateway::store::{ItemRecord, RevisionOutcome};

/// One accepted revision's figures.
struct Row {
    categories: Vec<String>,
    /// Edit distance to the nearest reference: revision minus original (negative: closer).
    distance_change: f64,
    /// Base-model NLL of the revision minus the original's (positive: less natural text).
    nll_change: f64,
    deleted_words: bool,
    seam: bool,
}

/// Word-level Levenshtein distance.
fn edit_distance(a: &[&str], b: &[&str]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(!x.eq_ignore_ascii_case(y));
            row[j + 1] = substitute.min(prev[j + 1] + 1).min(row[j] + 1);
        }
        prev = row;
    }
    prev[b.len()]
}

fn words(s: &str) -> Vec<&str> {
    s.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .collect()
}

fn nearest(summary: &str, references: &[String]) -> f64 {
    let w = words(summary);
    references
        .iter()
        .map(|r| edit_distance(&w, &words(r)) as f64)
        .fold(f64::INFINITY, f64::min)
}

/// A seam a person would not write: words glued, a hanging word, brackets emptied.
fn has_bad_seam(original: &str, revision: &str) -> bool {
    let bad = [
        "  ",
        " .",
        " ,",
        "()",
        "( )",
        ": )",
        "regarding.",
        "about.",
        "for.",
        "the.",
    ];
    bad.iter()
        .any(|b| revision.contains(b) && !original.contains(b))
        || words(revision).iter().any(|w| {
            let chars: Vec<char> = w.chars().collect();
            chars
                .windows(3)
                .any(|c| c[0].is_lowercase() && c[1].is_lowercase() && c[2].is_uppercase())
                && !original.contains(w)
        })
}

async fn nll(
    editor: &mut EditorClient<GrpcChannel>,
    item: &ItemRecord,
    reply: &str,
) -> anyhow::Result<f64> {
    // Asked exactly as Evaluate asks the students (one prompt for every model).
    let messages =
        gateway::pipeline::summarize_request(&item.conversation, &Default::default()).messages;
    let scored = editor
        .score(pb::ScoreRequest {
            messages,
            reply: reply.to_string(),
        })
        .await?
        .into_inner();
    Ok(scored.mean_nll)
}

/// Prints the diagnosis table for the accepted revisions of `items`.
pub async fn print(
    editor: &mut EditorClient<GrpcChannel>,
    items: &[ItemRecord],
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for item in items {
        if item.revision_outcome != Some(RevisionOutcome::Accepted) || item.references.is_empty() {
            continue;
        }
        let Some(revision) = item.final_summary.as_deref() else {
            continue;
        };
        let original = item.teacher_summary.as_str();
        let mut categories: Vec<String> = item
            .analysis
            .iter()
            .flat_map(|a| a.findings.iter().map(|f| f.category_id.clone()))
            .collect();
        categories.sort();
        categories.dedup();
        rows.push(Row {
            categories,
            distance_change: nearest(revision, &item.references)
                - nearest(original, &item.references),
            nll_change: nll(editor, item, revision).await? - nll(editor, item, original).await?,
            deleted_words: words(revision).len() < words(original).len(),
            seam: has_bad_seam(original, revision),
        });
    }
    if rows.is_empty() {
        println!("\ndiagnosis: no accepted revision with references");
        return Ok(());
    }
    let mut groups: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        groups.entry("(all)".into()).or_default().push(r);
        for c in &r.categories {
            groups.entry(c.clone()).or_default().push(r);
        }
        if r.deleted_words {
            groups
                .entry("(shorter than the original)".into())
                .or_default()
                .push(r);
        }
        if r.seam {
            groups.entry("(a bad seam)".into()).or_default().push(r);
        }
    }
    println!(
        "\ndiagnosis of the accepted revisions (against the originals they replaced):\n\n| flagged | n | edit distance to the nearest reference, change | base-model NLL of the summary, change (nats/token) | closer | less likely |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    );
    for (group, rs) in groups {
        let n = rs.len() as f64;
        let mean = |f: fn(&Row) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / n;
        println!(
            "| {group} | {} | {:+.2} | {:+.3} | {} | {} |",
            rs.len(),
            mean(|r| r.distance_change),
            mean(|r| r.nll_change),
            rs.iter().filter(|r| r.distance_change < 0.0).count(),
            rs.iter().filter(|r| r.nll_change > 0.0).count()
        );
    }
    Ok(())
}
