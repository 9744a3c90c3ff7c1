//! Student against teacher on the held-out conversations, from the items' stored evaluations:
//! error rate per category, mean ROUGE against human references, mean judge rating; overall
//! and per channel.

use std::collections::BTreeMap;

use arf_proto::v1 as pb;
use serde_json::Value;

use crate::store::ItemRecord;

#[derive(Default)]
struct Acc {
    n: u32,
    categories: BTreeMap<String, u32>,
    rouge: [f64; 3],
    rouge_n: u32,
    judge: f64,
    judge_n: u32,
}

impl Acc {
    fn add(&mut self, side: &Value) {
        self.n += 1;
        for c in side["categories"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            *self.categories.entry(c.to_string()).or_default() += 1;
        }
        if let Some(r) = side["rouge"].as_object() {
            for (i, key) in ["rouge1", "rouge2", "rougeL"].iter().enumerate() {
                self.rouge[i] += r.get(*key).and_then(Value::as_f64).unwrap_or(0.0);
            }
            self.rouge_n += 1;
        }
        if let Some(j) = side["judge"].as_f64() {
            self.judge += j;
            self.judge_n += 1;
        }
    }

    fn card(&self, model: &str) -> pb::ScoreCard {
        let mean = |sum: f64, n: u32| if n == 0 { 0.0 } else { sum / f64::from(n) };
        pb::ScoreCard {
            model: model.to_string(),
            summaries: self.n,
            error_rates: self.categories.iter().map(|(c, k)| (c.clone(), f64::from(*k) / f64::from(self.n.max(1)))).collect(),
            rouge1: mean(self.rouge[0], self.rouge_n),
            rouge2: mean(self.rouge[1], self.rouge_n),
            rouge_l: mean(self.rouge[2], self.rouge_n),
            judge_mean: mean(self.judge, self.judge_n),
        }
    }
}

/// (overall [teacher, student], per channel).
pub fn score_cards(items: &[ItemRecord]) -> (Vec<pb::ScoreCard>, Vec<pb::ChannelScores>) {
    let mut overall = (Acc::default(), Acc::default());
    let mut channels: BTreeMap<String, (Acc, Acc)> = BTreeMap::new();
    for e in items.iter().filter_map(|i| i.evaluation.as_ref()) {
        let channel = e["channel"].as_str().unwrap_or("unknown").to_string();
        let per = channels.entry(channel).or_default();
        overall.0.add(&e["teacher"]);
        overall.1.add(&e["student"]);
        per.0.add(&e["teacher"]);
        per.1.add(&e["student"]);
    }
    if overall.0.n == 0 {
        return (Vec::new(), Vec::new());
    }
    let per_channel = channels
        .into_iter()
        .map(|(channel, (t, s))| pb::ChannelScores { channel, scores: vec![t.card("teacher"), s.card("student")] })
        .collect();
    (vec![overall.0.card("teacher"), overall.1.card("student")], per_channel)
}
