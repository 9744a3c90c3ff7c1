//! The models side by side on the held-out conversations, from the items' stored evaluations:
//! error rate per category, mean ROUGE against human references, mean judge rating; overall
//! and per channel. Base model, unrevised student, ARF student and teacher, where the run has
//! each.

use std::collections::BTreeMap;

use arf_proto::v1 as pb;

use crate::store::evaluation::{Evaluation, Model, ScoredSummary};

#[derive(Default)]
struct Acc {
    n: u32,
    categories: BTreeMap<String, u32>,
    rouge: [f64; 3],
    rouge_n: u32,
    judge: f64,
    judge_n: u32,
    nll: f64,
    nll_n: u32,
}

impl Acc {
    fn add(&mut self, side: &ScoredSummary) {
        self.n += 1;
        for c in &side.categories {
            *self.categories.entry(c.clone()).or_default() += 1;
        }
        if let Some(r) = side.rouge {
            self.rouge[0] += r.rouge1;
            self.rouge[1] += r.rouge2;
            self.rouge[2] += r.rouge_l;
            self.rouge_n += 1;
        }
        if let Some(nll) = side.reference_nll {
            self.nll += nll;
            self.nll_n += 1;
        }
        if let Some(j) = side.judge {
            self.judge += f64::from(j);
            self.judge_n += 1;
        }
    }

    fn card(&self, model: Model) -> pb::ScoreCard {
        let mean = |sum: f64, n: u32| if n == 0 { 0.0 } else { sum / f64::from(n) };
        pb::ScoreCard {
            model: model.card_name().to_string(),
            summaries: self.n,
            error_rates: self
                .categories
                .iter()
                .map(|(c, k)| (c.clone(), f64::from(*k) / f64::from(self.n.max(1))))
                .collect(),
            rouge1: mean(self.rouge[0], self.rouge_n),
            rouge2: mean(self.rouge[1], self.rouge_n),
            rouge_l: mean(self.rouge[2], self.rouge_n),
            judge_mean: mean(self.judge, self.judge_n),
            reference_nll: (self.nll_n > 0).then(|| mean(self.nll, self.nll_n)),
        }
    }
}

/// One accumulator per model the evaluations have.
#[derive(Default)]
struct Cards(BTreeMap<Model, Acc>);

impl Cards {
    fn cards(&self) -> Vec<pb::ScoreCard> {
        self.0.iter().map(|(m, acc)| acc.card(*m)).collect()
    }
}

/// (overall, per channel): one card per model, in [`Model::ALL`]'s order.
pub fn score_cards(evaluations: &[Evaluation]) -> (Vec<pb::ScoreCard>, Vec<pb::ChannelScores>) {
    let mut overall = Cards::default();
    let mut channels: BTreeMap<String, Cards> = BTreeMap::new();
    for e in evaluations {
        let per = channels.entry(e.channel.clone()).or_default();
        for model in Model::ALL {
            if let Some(side) = e.get(model) {
                overall.0.entry(model).or_default().add(side);
                per.0.entry(model).or_default().add(side);
            }
        }
    }
    let per_channel = channels
        .into_iter()
        .map(|(channel, cards)| pb::ChannelScores {
            channel,
            scores: cards.cards(),
        })
        .collect();
    (overall.cards(), per_channel)
}
