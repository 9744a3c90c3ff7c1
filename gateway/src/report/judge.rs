//! Whether the judge's ratings mean anything. A small judge can rate every summary the same, or
//! rank the teacher below the base model while ROUGE against human references says the
//! opposite; printed as a score, either would mislead. Such a judge is reported as
//! uninformative, with the reason, instead.

use std::collections::BTreeSet;

use arf_proto::v1 as pb;

use crate::store::evaluation::{Evaluation, Model};

/// Model means closer than this (on the 1-5 scale) do not tell the models apart.
const SAME_MEAN: f64 = 0.05;

/// Why the judge is uninformative on this run's evaluations; `None` when it may be read (or
/// when no judge ran).
pub fn uninformative(evaluations: &[Evaluation], cards: &[pb::ScoreCard]) -> Option<String> {
    let ratings: BTreeSet<u8> = evaluations
        .iter()
        .flat_map(|e| Model::ALL.into_iter().filter_map(|m| e.get(m)?.judge))
        .collect();
    let rated: Vec<&pb::ScoreCard> = cards.iter().filter(|c| c.judge_mean > 0.0).collect();
    if ratings.is_empty() || rated.is_empty() {
        return None;
    }
    if ratings.len() == 1 {
        let only = ratings.first().copied().unwrap_or_default();
        return Some(format!(
            "it rated every summary {only}, whichever model wrote it"
        ));
    }
    if rated.len() >= 2 {
        let (lo, hi) = rated.iter().fold((f64::MAX, f64::MIN), |(lo, hi), c| {
            (lo.min(c.judge_mean), hi.max(c.judge_mean))
        });
        if hi - lo < SAME_MEAN {
            return Some(format!(
                "its mean rating is {lo:.2} to {hi:.2} for every model: it does not tell them apart"
            ));
        }
    }
    let card = |m: Model| rated.iter().find(|c| c.model == m.card_name());
    if let (Some(teacher), Some(base)) = (card(Model::Teacher), card(Model::Base))
        && teacher.judge_mean < base.judge_mean
        && teacher.rouge_l > base.rouge_l
    {
        return Some(format!(
            "it ranks the teacher ({:.2}) below the base model ({:.2}), while ROUGE-L against the human references ranks the teacher above ({:.3} against {:.3})",
            teacher.judge_mean, base.judge_mean, teacher.rouge_l, base.rouge_l
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::evaluation::ScoredSummary;

    fn item(teacher: u8, student: u8, base: u8) -> Evaluation {
        let side = |judge: u8| ScoredSummary {
            judge: Some(judge),
            ..Default::default()
        };
        Evaluation {
            channel: "chat".into(),
            teacher: side(teacher),
            student: side(student),
            base: Some(side(base)),
            ..Default::default()
        }
    }

    fn card(model: Model, judge_mean: f64, rouge_l: f64) -> pb::ScoreCard {
        pb::ScoreCard {
            model: model.card_name().into(),
            judge_mean,
            rouge_l,
            ..Default::default()
        }
    }

    #[test]
    fn a_judge_that_rates_everything_the_same_is_uninformative() {
        let items = vec![item(1, 1, 1), item(1, 1, 1)];
        let cards = [card(Model::Teacher, 1.0, 0.8), card(Model::Base, 1.0, 0.2)];
        let why = uninformative(&items, &cards).unwrap();
        assert!(why.contains("rated every summary 1"), "{why}");
    }

    #[test]
    fn a_judge_that_ranks_the_teacher_below_the_base_against_rouge_is_uninformative() {
        let items = vec![item(2, 3, 4), item(3, 3, 4)];
        let cards = [card(Model::Teacher, 2.5, 0.8), card(Model::Base, 4.0, 0.2)];
        let why = uninformative(&items, &cards).unwrap();
        assert!(why.contains("below the base model"), "{why}");
    }

    #[test]
    fn a_judge_that_agrees_with_rouge_is_kept() {
        let items = vec![item(5, 4, 2), item(4, 3, 2)];
        let cards = [card(Model::Teacher, 4.5, 0.8), card(Model::Base, 2.0, 0.2)];
        assert_eq!(uninformative(&items, &cards), None);
        // No judge ran: nothing to say.
        assert_eq!(uninformative(&[], &[card(Model::Teacher, 0.0, 0.8)]), None);
    }
}
