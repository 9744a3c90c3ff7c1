//! Did ARF help? The models' differences on the same held-out conversations, paired per
//! conversation, each with a bootstrap 95% confidence interval (conversations resampled with
//! replacement). A difference whose interval straddles zero is "no effect found", and the report
//! says so instead of ranking the models by their means.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use arf_proto::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::store::evaluation::{Evaluation, Model, ScoredSummary, rule_category};

/// Resamples per interval: enough that the 2.5% and 97.5% points move by well under the
/// precision the report prints.
const RESAMPLES: usize = 10_000;
/// Fixed, so a report regenerated from the same store prints the same intervals.
const SEED: u64 = 0x0A2F;

/// A mean difference and its percentile-bootstrap 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

/// The percentile-bootstrap 95% interval of the mean of `diffs`; `None` when empty.
pub fn paired_bootstrap(diffs: &[f64], resamples: usize, seed: u64) -> Option<Interval> {
    if diffs.is_empty() {
        return None;
    }
    let n = diffs.len();
    let mean = diffs.iter().sum::<f64>() / n as f64;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| (0..n).map(|_| diffs[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((means.len() - 1) as f64 * q).round() as usize];
    Some(Interval {
        mean,
        low: at(0.025),
        high: at(0.975),
    })
}

/// The comparisons a report makes: (model, baseline). ARF against filter-only answers whether
/// revising the flagged summaries beats dropping them.
const PAIRS: [(Model, Model); 6] = [
    (Model::Student, Model::Unrevised),
    (Model::Student, Model::FilterOnly),
    (Model::FilterOnly, Model::Unrevised),
    (Model::Oracle, Model::Unrevised),
    (Model::Unrevised, Model::Base),
    (Model::Student, Model::Base),
];

/// Per-summary metrics, in points (ROUGE), nats (reference NLL) or percentage points (error
/// rate).
const METRICS: [(&str, fn(&ScoredSummary) -> Option<f64>); 5] = [
    ("rouge1", |s| s.rouge.map(|r| r.rouge1 * 100.0)),
    ("rouge2", |s| s.rouge.map(|r| r.rouge2 * 100.0)),
    ("rouge_l", |s| s.rouge.map(|r| r.rouge_l * 100.0)),
    ("reference_nll", |s| s.reference_nll),
    ("any_error", |s| flag(s, !s.categories.is_empty())),
];

/// The metric name of one category's error rate.
const CATEGORY_PREFIX: &str = "error:";

/// 100 when the analyzer flagged `s` (`flagged`, read from its categories or rules), else 0;
/// `None` if it could not check `s`.
fn flag(s: &ScoredSummary, flagged: bool) -> Option<f64> {
    (!s.failed).then_some(if flagged { 100.0 } else { 0.0 })
}

/// Where a lower value is the better one.
fn lower_is_better(metric: &str) -> bool {
    metric == "any_error" || metric == "reference_nll" || metric.starts_with(CATEGORY_PREFIX)
}

/// Every paired difference the evaluations allow; against the unrevised student, and for ARF
/// against filter-only, also each error category's rate (the categories revision targets).
pub fn differences(evaluations: &[Evaluation]) -> Vec<pb::Difference> {
    paired_differences(&evaluations.iter().collect::<Vec<_>>())
}

fn paired_differences(evaluations: &[&Evaluation]) -> Vec<pb::Difference> {
    let mut out = Vec::new();
    for (model, baseline) in PAIRS {
        for (metric, value) in METRICS {
            out.extend(difference(evaluations, model, baseline, metric, value));
        }
        if baseline != Model::Unrevised && (model, baseline) != (Model::Student, Model::FilterOnly)
        {
            continue;
        }
        // What either side's summaries were flagged with, each once.
        let seen = |of: fn(&ScoredSummary) -> &Vec<String>| -> BTreeSet<&String> {
            evaluations
                .iter()
                .flat_map(|e| [e.get(model), e.get(baseline)])
                .flatten()
                .flat_map(of)
                .collect()
        };
        let rules = seen(|s| &s.rules);
        for category in seen(|s| &s.categories) {
            let value = |s: &ScoredSummary| flag(s, s.categories.contains(category));
            let metric = format!("{CATEGORY_PREFIX}{category}");
            out.extend(difference(evaluations, model, baseline, &metric, value));
            // A category that more than one rule found: each rule's rate too (the kinds of one
            // category can move apart, as a teacher's speaker swaps and a student's own do).
            let by_rule: Vec<&&String> = rules
                .iter()
                .filter(|r| rule_category(r) == category.as_str())
                .collect();
            if by_rule.len() < 2 {
                continue;
            }
            for rule in by_rule {
                let value = |s: &ScoredSummary| flag(s, s.rules.contains(rule));
                let metric = format!("{CATEGORY_PREFIX}{rule}");
                out.extend(difference(evaluations, model, baseline, &metric, value));
            }
        }
    }
    out
}

/// `model` minus `baseline` on `metric`, paired per conversation; `None` without a pair. Flag
/// metrics (error rates) also get the exact McNemar test.
fn difference(
    evaluations: &[&Evaluation],
    model: Model,
    baseline: Model,
    metric: &str,
    value: impl Fn(&ScoredSummary) -> Option<f64>,
) -> Option<pb::Difference> {
    let diffs: Vec<f64> = evaluations
        .iter()
        .filter_map(|e| Some(value(e.get(model)?)? - value(e.get(baseline)?)?))
        .collect();
    let ci = paired_bootstrap(&diffs, RESAMPLES, SEED)?;
    // Flags are 0 or 100 per summary: +100 where only the model's was flagged.
    let is_flag = metric == "any_error" || metric.starts_with(CATEGORY_PREFIX);
    let mcnemar_p = is_flag.then(|| {
        let only_model = diffs.iter().filter(|d| **d > 0.0).count() as u64;
        let only_baseline = diffs.iter().filter(|d| **d < 0.0).count() as u64;
        exact_mcnemar(only_model, only_baseline)
    });
    Some(pb::Difference {
        mcnemar_p,
        model: model.card_name().into(),
        baseline: baseline.card_name().into(),
        metric: metric.into(),
        conversations: diffs.len() as u32,
        mean: ci.mean,
        ci_low: ci.low,
        ci_high: ci.high,
    })
}

/// The exact McNemar test's two-sided p-value for `b` and `c` discordant pairs: under no
/// effect each discordant pair goes either way with probability 1/2.
pub fn exact_mcnemar(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    // P(X <= min(b, c)) for X ~ Binomial(n, 1/2), summed in log space (n can be large).
    let k = b.min(c);
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// How a person reads one difference.
pub fn verdict(d: &pb::Difference) -> &'static str {
    let lower_is_better = lower_is_better(&d.metric);
    if d.ci_low > 0.0 {
        if lower_is_better { "worse" } else { "better" }
    } else if d.ci_high < 0.0 {
        if lower_is_better { "better" } else { "worse" }
    } else {
        "no effect found"
    }
}

/// The paired differences, as a table a person reads top to bottom.
pub fn section(md: &mut String, differences: &[pb::Difference]) {
    if differences.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Did ARF help? Paired differences with 95% confidence intervals\n\n\
         Per held-out conversation, one model's score minus another's; the interval is a bootstrap \
         over conversations (10,000 resamples). ROUGE in points; `reference_nll` in nats per token \
         of the human references (lower is better); `any_error` and `error:<category>` in \
         percentage points of summaries the analyzer flags (lower is better).\n\n\
         `McNemar p` is the exact test on the conversations where only one of the two was flagged.\n\n\
         | comparison | metric | conversations | difference | 95% CI | McNemar p | reading |\n\
         | --- | --- | ---: | ---: | --- | ---: | --- |"
    );
    for d in differences {
        let _ = writeln!(
            md,
            "| {} minus {} | {} | {} | {:+.2} | {:+.2} to {:+.2} | {} | {} |",
            d.model,
            d.baseline,
            d.metric,
            d.conversations,
            d.mean,
            d.ci_low,
            d.ci_high,
            d.mcnemar_p.map_or(String::new(), |p| format!("{p:.3}")),
            verdict(d)
        );
    }
    md.push('\n');
    if let Some(why) = ceiling_unseen(differences) {
        let _ = writeln!(md, "{why}\n");
    }
}

/// When the oracle (trained on the human references) cannot be told from the unrevised student
/// on ROUGE-L or on reference NLL, no difference in training data this evaluation could show:
/// a "no effect found" elsewhere then says nothing about revision. The sentence that says so.
pub fn ceiling_unseen(differences: &[pb::Difference]) -> Option<String> {
    let oracle: Vec<&pb::Difference> = differences
        .iter()
        .filter(|d| {
            d.model == Model::Oracle.card_name()
                && d.baseline == Model::Unrevised.card_name()
                && (d.metric == "rouge_l" || d.metric == "reference_nll")
        })
        .collect();
    (!oracle.is_empty() && oracle.iter().all(|d| verdict(d) == "no effect found")).then(|| {
        format!(
            "**The oracle cannot be told from the unrevised student** (ROUGE-L and reference NLL, \
             {} conversations): this evaluation is too small, or the training too short, to show \
             any effect of the training data, so its \"no effect found\" for ARF is not evidence \
             of no effect.",
            oracle[0].conversations
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_mcnemar_test_matches_known_values() {
        // 0 vs 5 discordant pairs: 2 * 0.5^5.
        assert!((exact_mcnemar(0, 5) - 0.0625).abs() < 1e-12);
        // 1 vs 9: 2 * (1 + 10) / 1024.
        assert!((exact_mcnemar(9, 1) - 22.0 / 1024.0).abs() < 1e-12);
        assert_eq!(exact_mcnemar(3, 3), 1.0);
        assert_eq!(exact_mcnemar(0, 0), 1.0);
        // Large n stays finite: 0 vs 1000 is 2^-999.
        let p = exact_mcnemar(0, 1000);
        assert!(p > 0.0 && p < 1e-300, "{p}");
    }

    #[test]
    fn a_constant_difference_has_no_spread() {
        let ci = paired_bootstrap(&[2.5; 30], 1000, 1).unwrap();
        assert_eq!((ci.mean, ci.low, ci.high), (2.5, 2.5, 2.5));
        assert_eq!(paired_bootstrap(&[], 1000, 1), None);
    }

    #[test]
    fn the_interval_of_a_known_case_matches_the_normal_approximation() {
        // 100 conversations, half +1 and half 0: mean 0.5, standard error 0.05, so the 95%
        // interval is 0.5 +- 1.96 * 0.05 = [0.402, 0.598].
        let diffs: Vec<f64> = (0..100).map(|i| f64::from(i % 2)).collect();
        let ci = paired_bootstrap(&diffs, RESAMPLES, SEED).unwrap();
        assert!((ci.mean - 0.5).abs() < 1e-12);
        assert!((ci.low - 0.402).abs() < 0.015, "{ci:?}");
        assert!((ci.high - 0.598).abs() < 0.015, "{ci:?}");
    }

    /// A constructed case with known answers: the ARF student never hallucinates where the
    /// unrevised one does in 20 of 40 conversations, and gives the references 0.5 nats less.
    #[test]
    fn per_category_rates_and_reference_nll_against_the_unrevised_student() {
        let summary = |categories: &[&str], nll: f64| ScoredSummary {
            categories: categories.iter().map(|c| c.to_string()).collect(),
            reference_nll: Some(nll),
            ..Default::default()
        };
        let evaluations: Vec<Evaluation> = (0..40)
            .map(|i| Evaluation {
                student: summary(&[], 1.0),
                unrevised: Some(summary(
                    if i % 2 == 0 { &["hallucination"] } else { &[] },
                    1.5,
                )),
                base: Some(summary(&["omission"], 3.0)),
                ..Default::default()
            })
            .collect();
        let refs: Vec<&Evaluation> = evaluations.iter().collect();
        let all = paired_differences(&refs);
        let find = |model: &str, baseline: &str, metric: &str| {
            all.iter()
                .find(|d| d.model == model && d.baseline == baseline && d.metric == metric)
                .cloned()
        };
        let halluc = find("student", "unrevised", "error:hallucination").unwrap();
        assert_eq!(halluc.mean, -50.0);
        assert!(halluc.ci_high < 0.0, "{halluc:?}");
        assert!((halluc.mcnemar_p.unwrap() - 2.0 * 0.5f64.powi(20)).abs() < 1e-15);
        assert_eq!(verdict(&halluc), "better");
        let nll = find("student", "unrevised", "reference_nll").unwrap();
        assert_eq!((nll.mean, nll.ci_low, nll.ci_high), (-0.5, -0.5, -0.5));
        assert_eq!(nll.mcnemar_p, None);
        assert_eq!(verdict(&nll), "better");
        // Categories are compared against the unrevised student only, and only those either
        // side has: the base model's omissions make no per-category row.
        assert!(find("student", "unrevised", "error:omission").is_none());
        assert!(find("student", "base", "error:omission").is_none());
        assert_eq!(find("unrevised", "base", "any_error").unwrap().mean, -50.0);
    }

    /// A category two rules find gets a row per rule beside its own: here the unrevised student
    /// has the role kind in 10 of 30 conversations and the ARF student in none, while both have
    /// the clause kind in the same 12, so the category moves less than the role kind does.
    #[test]
    fn a_category_found_by_two_rules_is_also_compared_per_rule() {
        let summary = |rules: &[&str]| ScoredSummary {
            categories: if rules.is_empty() {
                vec![]
            } else {
                vec!["speaker_attribution".into()]
            },
            rules: rules.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        };
        let (role, clause) = (
            "speaker_attribution/attribution.role",
            "speaker_attribution/attribution.clause",
        );
        let evaluations: Vec<Evaluation> = (0..30)
            .map(|i| {
                let mut unrevised = vec![];
                if i < 10 {
                    unrevised.push(role);
                }
                let mut student = vec![];
                if i % 2 == 0 && i < 24 {
                    unrevised.push(clause);
                    student.push(clause);
                }
                Evaluation {
                    student: summary(&student),
                    unrevised: Some(summary(&unrevised)),
                    ..Default::default()
                }
            })
            .collect();
        let refs: Vec<&Evaluation> = evaluations.iter().collect();
        let all = paired_differences(&refs);
        let find = |metric: &str| {
            all.iter()
                .find(|d| d.model == "student" && d.baseline == "unrevised" && d.metric == metric)
                .cloned()
        };
        let by_role = find(&format!("error:{role}")).unwrap();
        assert!((by_role.mean + 100.0 / 3.0).abs() < 1e-9, "{by_role:?}");
        assert!((by_role.mcnemar_p.unwrap() - 2.0 * 0.5f64.powi(10)).abs() < 1e-15);
        let by_clause = find(&format!("error:{clause}")).unwrap();
        assert_eq!((by_clause.mean, by_clause.mcnemar_p), (0.0, Some(1.0)));
        // Conversations 0, 2, 4, 6 and 8 have both kinds: the category falls in 5 of 30 only.
        let category = find("error:speaker_attribution").unwrap();
        assert!((category.mean + 100.0 / 6.0).abs() < 1e-9, "{category:?}");
        // A category one rule found makes no per-rule row.
        let one_rule: Vec<Evaluation> = (0..4)
            .map(|_| Evaluation {
                student: summary(&[clause]),
                unrevised: Some(summary(&[])),
                ..Default::default()
            })
            .collect();
        let refs: Vec<&Evaluation> = one_rule.iter().collect();
        assert!(
            !paired_differences(&refs)
                .iter()
                .any(|d| d.metric.contains('/'))
        );
    }

    #[test]
    fn the_report_says_when_even_the_oracle_shows_no_effect() {
        let d = |model: &str, metric: &str, ci_low, ci_high| pb::Difference {
            model: model.into(),
            baseline: "unrevised".into(),
            metric: metric.into(),
            conversations: 24,
            ci_low,
            ci_high,
            ..Default::default()
        };
        let unseen = [
            d("oracle", "rouge_l", -1.0, 2.0),
            d("oracle", "reference_nll", -0.2, 0.1),
            d("student", "rouge_l", 0.5, 2.0),
        ];
        assert!(
            ceiling_unseen(&unseen)
                .unwrap()
                .contains("24 conversations")
        );
        let seen = [
            d("oracle", "rouge_l", -1.0, 2.0),
            d("oracle", "reference_nll", -0.4, -0.1),
        ];
        assert_eq!(ceiling_unseen(&seen), None);
        assert_eq!(ceiling_unseen(&[d("student", "rouge_l", -1.0, 1.0)]), None);
    }

    #[test]
    fn verdicts_follow_the_interval_and_the_metric_direction() {
        let d = |metric: &str, ci_low, ci_high| pb::Difference {
            metric: metric.into(),
            ci_low,
            ci_high,
            ..Default::default()
        };
        assert_eq!(verdict(&d("rouge_l", 0.5, 3.0)), "better");
        assert_eq!(verdict(&d("rouge_l", -3.0, -0.5)), "worse");
        assert_eq!(verdict(&d("rouge_l", -1.0, 2.0)), "no effect found");
        assert_eq!(verdict(&d("any_error", -20.0, -5.0)), "better");
        assert_eq!(verdict(&d("reference_nll", -0.3, -0.1)), "better");
        assert_eq!(verdict(&d("error:omission", 2.0, 9.0)), "worse");
    }
}
