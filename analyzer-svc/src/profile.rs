//! The corpus profile: what the teacher gets wrong, over many analyzed summaries. Rates per
//! category and per channel, which errors come together, a few exemplar ids per category, and
//! the revision plan (which summaries the editor rewrites, told what to fix). `to_markdown` is
//! the page a person reads.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::finding::Finding;
use crate::taxonomy::{CategoryId, Severity, TAXONOMY_VERSION};

/// Exemplar ids kept per category.
pub const DEFAULT_EXEMPLARS: usize = 3;

/// Per category: how many summaries have it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryStats {
    pub category: CategoryId,
    /// Summaries with at least one finding of the category.
    pub summaries: usize,
    /// `summaries` over all summaries profiled.
    pub rate: f64,
    /// Findings of the category (a summary can have several).
    pub findings: usize,
    /// A few summary ids that show it, in the order they were added.
    pub exemplars: Vec<String>,
}

/// Per channel: how many summaries, how many flagged, and per-category counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelStats {
    pub channel: String,
    pub summaries: usize,
    pub flagged: usize,
    pub rate: f64,
    /// Summaries with the category, for the categories seen in this channel.
    pub categories: BTreeMap<CategoryId, usize>,
}

/// Two categories found in the same summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoOccurrence {
    pub a: CategoryId,
    pub b: CategoryId,
    pub summaries: usize,
}

/// One instruction for one flagged summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RevisionInstruction {
    pub category: CategoryId,
    /// The taxonomy's instruction for the category.
    pub instruction: &'static str,
    /// The flagged summary text (one per finding of the category), so the editor sees where.
    pub spans: Vec<String>,
}

/// A summary to revise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RevisionItem {
    pub summary_id: String,
    pub channel: String,
    /// The worst severity among its findings: the plan is ordered by it.
    pub severity: Severity,
    pub instructions: Vec<RevisionInstruction>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorpusProfile {
    pub taxonomy_version: &'static str,
    pub summaries: usize,
    pub flagged: usize,
    /// Every category with at least one finding, most frequent first.
    pub categories: Vec<CategoryStats>,
    pub channels: Vec<ChannelStats>,
    /// Pairs seen together at least once, most frequent first.
    pub co_occurrence: Vec<CoOccurrence>,
    /// Flagged summaries, worst first.
    pub revision_plan: Vec<RevisionItem>,
    /// Flagged summaries left out of the plan: it had reached its byte budget (they arrived
    /// after the ones kept).
    pub plan_omitted: usize,
}

/// Builds a profile one analysis at a time (a corpus need not fit in memory: only ids, counts
/// and the plan are kept).
#[derive(Debug, Clone)]
pub struct ProfileBuilder {
    exemplars: usize,
    summaries: usize,
    flagged: usize,
    categories: BTreeMap<CategoryId, (usize, usize, Vec<String>)>,
    channels: BTreeMap<String, (usize, usize, BTreeMap<CategoryId, usize>)>,
    pairs: BTreeMap<(CategoryId, CategoryId), usize>,
    plan: Vec<RevisionItem>,
    /// Bytes the plan may hold (about: its ids, channels and spans); past it a flagged summary
    /// is counted in `plan_omitted` instead. The stream is any length; the answer is one message.
    plan_budget: usize,
    plan_bytes: usize,
    plan_omitted: usize,
}

/// Distinct channel names a profile keeps (they come from the client); the rest are counted
/// together under [`OTHER_CHANNELS`].
pub const MAX_CHANNELS: usize = 256;
pub const OTHER_CHANNELS: &str = "(other channels)";
/// The plan's budget when none is given: well under a 16 MiB message.
pub const DEFAULT_PLAN_BYTES: usize = 8 << 20;
/// Exemplar ids a request may ask for per category.
pub const MAX_EXEMPLARS: usize = 1000;

impl Default for ProfileBuilder {
    fn default() -> Self {
        ProfileBuilder::new(DEFAULT_EXEMPLARS)
    }
}

impl ProfileBuilder {
    pub fn new(exemplars_per_category: usize) -> ProfileBuilder {
        ProfileBuilder {
            exemplars: exemplars_per_category,
            summaries: 0,
            flagged: 0,
            categories: BTreeMap::new(),
            channels: BTreeMap::new(),
            pairs: BTreeMap::new(),
            plan: Vec::new(),
            plan_budget: DEFAULT_PLAN_BYTES,
            plan_bytes: 0,
            plan_omitted: 0,
        }
    }

    /// Bounds the revision plan to about `bytes` (the server passes half its message limit).
    pub fn with_plan_budget(mut self, bytes: usize) -> Self {
        self.plan_budget = bytes;
        self
    }

    /// Adds one analyzed summary.
    pub fn add(&mut self, summary_id: &str, channel: &str, findings: &[Finding]) {
        self.summaries += 1;
        let present: BTreeSet<CategoryId> = findings.iter().map(|f| f.category).collect();
        let channel = if self.channels.contains_key(channel) || self.channels.len() < MAX_CHANNELS {
            channel
        } else {
            OTHER_CHANNELS
        };
        let channel_stats = self.channels.entry(channel.to_string()).or_default();
        channel_stats.0 += 1;
        if present.is_empty() {
            return;
        }
        self.flagged += 1;
        channel_stats.1 += 1;
        for &c in &present {
            *channel_stats.2.entry(c).or_default() += 1;
            let (summaries, _, exemplars) = self.categories.entry(c).or_default();
            *summaries += 1;
            if exemplars.len() < self.exemplars {
                exemplars.push(summary_id.to_string());
            }
        }
        for f in findings {
            self.categories.entry(f.category).or_default().1 += 1;
        }
        let list: Vec<CategoryId> = present.iter().copied().collect();
        for (i, &a) in list.iter().enumerate() {
            for &b in &list[i + 1..] {
                *self.pairs.entry((a, b)).or_default() += 1;
            }
        }
        let instructions = list
            .iter()
            .map(|&c| RevisionInstruction {
                category: c,
                instruction: c.category().revision_instruction,
                spans: findings
                    .iter()
                    .filter(|f| f.category == c)
                    .map(|f| f.summary_span.text.clone())
                    .collect(),
            })
            .collect();
        let severity = findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Low);
        let item = RevisionItem {
            summary_id: summary_id.to_string(),
            channel: channel.to_string(),
            severity,
            instructions,
        };
        let bytes = item.approximate_bytes();
        if self.plan_bytes + bytes > self.plan_budget {
            self.plan_omitted += 1;
            return;
        }
        self.plan_bytes += bytes;
        self.plan.push(item);
    }

    pub fn finish(self) -> CorpusProfile {
        let rate = |n: usize, of: usize| if of == 0 { 0.0 } else { n as f64 / of as f64 };
        let mut categories: Vec<CategoryStats> = self
            .categories
            .into_iter()
            .map(
                |(category, (summaries, findings, exemplars))| CategoryStats {
                    category,
                    summaries,
                    rate: rate(summaries, self.summaries),
                    findings,
                    exemplars,
                },
            )
            .collect();
        categories.sort_by(|a, b| {
            b.summaries
                .cmp(&a.summaries)
                .then(a.category.cmp(&b.category))
        });
        let channels = self
            .channels
            .into_iter()
            .map(|(channel, (summaries, flagged, categories))| ChannelStats {
                channel,
                summaries,
                flagged,
                rate: rate(flagged, summaries),
                categories,
            })
            .collect();
        let mut co_occurrence: Vec<CoOccurrence> = self
            .pairs
            .into_iter()
            .map(|((a, b), summaries)| CoOccurrence { a, b, summaries })
            .collect();
        co_occurrence.sort_by(|x, y| {
            y.summaries
                .cmp(&x.summaries)
                .then((x.a, x.b).cmp(&(y.a, y.b)))
        });
        let mut revision_plan = self.plan;
        // Worst first; among equals, more categories first; then by id for a stable order.
        revision_plan.sort_by(|x, y| {
            y.severity
                .cmp(&x.severity)
                .then(y.instructions.len().cmp(&x.instructions.len()))
                .then(x.summary_id.cmp(&y.summary_id))
        });
        CorpusProfile {
            taxonomy_version: TAXONOMY_VERSION,
            summaries: self.summaries,
            flagged: self.flagged,
            categories,
            channels,
            co_occurrence,
            revision_plan,
            plan_omitted: self.plan_omitted,
        }
    }
}

impl RevisionItem {
    /// Its size as it is kept and sent, near enough to budget by.
    fn approximate_bytes(&self) -> usize {
        let instructions: usize = self
            .instructions
            .iter()
            .map(|i| 32 + i.instruction.len() + i.spans.iter().map(|s| s.len() + 8).sum::<usize>())
            .sum();
        64 + self.summary_id.len() + self.channel.len() + instructions
    }
}

impl CorpusProfile {
    /// The profile as a Markdown page. The revision plan lists at most `max_plan_rows` summaries
    /// (the whole plan is in the struct).
    pub fn to_markdown(&self, max_plan_rows: usize) -> String {
        let mut md = String::new();
        let pct = |r: f64| format!("{:.1}%", r * 100.0);
        let _ = writeln!(md, "# Teacher summary error profile\n");
        let _ = writeln!(
            md,
            "{} summaries analyzed, **{} flagged ({})**, taxonomy {}.\n",
            self.summaries,
            self.flagged,
            pct(if self.summaries == 0 {
                0.0
            } else {
                self.flagged as f64 / self.summaries as f64
            }),
            self.taxonomy_version
        );
        let _ = writeln!(md, "## Errors by category\n");
        if self.categories.is_empty() {
            let _ = writeln!(md, "No errors found.\n");
        } else {
            let _ = writeln!(
                md,
                "| category | summaries | rate | findings | severity | examples |\n|---|---:|---:|---:|---|---|"
            );
            for c in &self.categories {
                let _ = writeln!(
                    md,
                    "| {} (`{}`) | {} | {} | {} | {} | {} |",
                    c.category.category().name,
                    c.category,
                    c.summaries,
                    pct(c.rate),
                    c.findings,
                    c.category.category().default_severity,
                    c.exemplars
                        .iter()
                        .map(|e| format!("`{e}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            md.push('\n');
        }
        let _ = writeln!(md, "## By channel\n");
        let _ = writeln!(
            md,
            "| channel | summaries | flagged | rate | top categories |\n|---|---:|---:|---:|---|"
        );
        for ch in &self.channels {
            let mut top: Vec<(&CategoryId, &usize)> = ch.categories.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let top: Vec<String> = top
                .iter()
                .take(3)
                .map(|(c, n)| format!("{c} ({n})"))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                escape(&ch.channel),
                ch.summaries,
                ch.flagged,
                pct(ch.rate),
                top.join(", ")
            );
        }
        md.push('\n');
        if !self.co_occurrence.is_empty() {
            let _ = writeln!(md, "## Errors that come together\n");
            let _ = writeln!(md, "| categories | summaries |\n|---|---:|");
            for p in self.co_occurrence.iter().take(10) {
                let _ = writeln!(md, "| {} + {} | {} |", p.a, p.b, p.summaries);
            }
            md.push('\n');
        }
        let _ = writeln!(md, "## Revision plan\n");
        let _ = writeln!(
            md,
            "{} summaries to revise, worst first.\n",
            self.revision_plan.len()
        );
        if self.plan_omitted > 0 {
            let _ = writeln!(
                md,
                "> {} more flagged summaries are not in this plan: it reached its size limit \
                 (half the analyzer's `--max-message-bytes`, one answer). Profile them in parts.\n",
                self.plan_omitted
            );
        }
        for item in self.revision_plan.iter().take(max_plan_rows) {
            let _ = writeln!(
                md,
                "- **`{}`** ({}, {}):",
                item.summary_id,
                escape(&item.channel),
                item.severity
            );
            for i in &item.instructions {
                let spans: Vec<String> = i
                    .spans
                    .iter()
                    .take(2)
                    .map(|s| format!("\"{}\"", short(s, 80)))
                    .collect();
                let _ = writeln!(
                    md,
                    "  - `{}` at {}: {}",
                    i.category,
                    spans.join(", "),
                    i.instruction
                );
            }
        }
        if self.revision_plan.len() > max_plan_rows {
            let _ = writeln!(
                md,
                "- ... and {} more.",
                self.revision_plan.len() - max_plan_rows
            );
        }
        md
    }
}

/// Keeps table cells and list items on one line.
fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// At most `max` characters, on one line, cut on a character boundary.
fn short(s: &str, max: usize) -> String {
    let one_line = escape(s);
    match one_line.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{Evidence, TextSpan};

    fn f(c: CategoryId, text: &str) -> Finding {
        Finding::new(
            c,
            "t",
            TextSpan::of(text, 0, text.len()),
            Evidence::NotFound,
            0.9,
            "",
        )
    }

    fn profile() -> CorpusProfile {
        let mut b = ProfileBuilder::new(2);
        b.add(
            "s1",
            "chat",
            &[
                f(CategoryId::Truncation, "cut"),
                f(CategoryId::PiiExposure, "a@b.co"),
            ],
        );
        b.add(
            "s2",
            "chat",
            &[
                f(CategoryId::Truncation, "cut"),
                f(CategoryId::Truncation, "again"),
            ],
        );
        b.add("s3", "email", &[]);
        b.add(
            "s4",
            "email",
            &[
                f(CategoryId::Truncation, "x"),
                f(CategoryId::PiiExposure, "0770"),
            ],
        );
        b.add(
            "s5",
            "email",
            &[f(CategoryId::FormatViolation, "Sure!\nHere")],
        );
        b.finish()
    }

    #[test]
    fn rates_exemplars_and_co_occurrence() {
        let p = profile();
        assert_eq!((p.summaries, p.flagged), (5, 4));
        let t = &p.categories[0];
        assert_eq!(
            (t.category, t.summaries, t.findings),
            (CategoryId::Truncation, 3, 4)
        );
        assert_eq!(t.rate, 0.6);
        assert_eq!(t.exemplars, ["s1", "s2"], "capped at 2");
        assert_eq!(p.co_occurrence.len(), 1);
        assert_eq!(
            (
                p.co_occurrence[0].a,
                p.co_occurrence[0].b,
                p.co_occurrence[0].summaries
            ),
            (CategoryId::PiiExposure, CategoryId::Truncation, 2)
        );
        let email = p.channels.iter().find(|c| c.channel == "email").unwrap();
        assert_eq!(
            (
                email.summaries,
                email.flagged,
                email.categories[&CategoryId::PiiExposure]
            ),
            (3, 2, 1)
        );
    }

    #[test]
    fn revision_plan_is_worst_first_with_the_taxonomy_instructions() {
        let p = profile();
        let ids: Vec<_> = p
            .revision_plan
            .iter()
            .map(|r| r.summary_id.as_str())
            .collect();
        // PII is critical: s1 and s4 first (two categories each, then by id), then the medium ones.
        assert_eq!(ids, ["s1", "s4", "s2", "s5"]);
        let s2 = &p.revision_plan[2];
        assert_eq!(s2.instructions.len(), 1);
        assert_eq!(s2.instructions[0].spans, ["cut", "again"]);
        assert_eq!(
            s2.instructions[0].instruction,
            CategoryId::Truncation.category().revision_instruction
        );
    }

    #[test]
    fn markdown_has_every_section_and_stays_one_line_per_row() {
        let md = profile().to_markdown(3);
        for heading in [
            "# Teacher summary error profile",
            "## Errors by category",
            "## By channel",
            "## Errors that come together",
            "## Revision plan",
        ] {
            assert!(md.contains(heading), "{heading}\n{md}");
        }
        assert!(
            md.contains("| Truncation (`truncation`) | 3 | 60.0% | 4 | medium | `s1`, `s2` |"),
            "{md}"
        );
        assert!(md.contains("... and 1 more."));
        let full = profile().to_markdown(10);
        assert!(
            full.contains("\"Sure! Here\""),
            "newlines in spans are flattened:\n{full}"
        );
        let empty = ProfileBuilder::default().finish().to_markdown(10);
        assert!(empty.contains("No errors found."));
    }

    /// Issue 35 item 5: a stream of any length profiles in bounded memory: the plan stops at
    /// its byte budget and counts the rest; channel names past the cap are counted together.
    #[test]
    fn the_plan_and_the_channels_are_bounded() {
        let findings = [
            f(CategoryId::Truncation, "cut"),
            f(CategoryId::PiiExposure, "a@b.co"),
        ];
        let mut b = ProfileBuilder::new(3).with_plan_budget(4096);
        for i in 0..1000 {
            b.add(&format!("s{i}"), &format!("channel-{i}"), &findings);
        }
        let p = b.finish();
        assert_eq!(p.flagged, 1000);
        assert!(!p.revision_plan.is_empty());
        assert!(p.revision_plan.len() < 100, "{}", p.revision_plan.len());
        assert_eq!(p.revision_plan.len() + p.plan_omitted, 1000);
        assert_eq!(p.channels.len(), MAX_CHANNELS + 1);
        let other = p
            .channels
            .iter()
            .find(|c| c.channel == OTHER_CHANNELS)
            .unwrap();
        assert_eq!(other.summaries, 1000 - MAX_CHANNELS);
        assert!(p.to_markdown(5).contains("not in this plan"));
    }
}
