//! Progress bars for a run, fed by its events.

use std::collections::HashMap;

use arf_proto::v1 as pb;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pb::run_event::Kind;

pub struct RunProgress {
    bars: MultiProgress,
    stages: HashMap<i32, ProgressBar>,
}

const STAGES: [(pb::Stage, &str); 5] = [
    (pb::Stage::Generate, "generate"),
    (pb::Stage::Analyze, "analyze"),
    (pb::Stage::Revise, "revise"),
    (pb::Stage::Finetune, "finetune"),
    (pb::Stage::Evaluate, "evaluate"),
];

impl RunProgress {
    pub fn new(totals: pb::RunCounts, stages: &[pb::Stage]) -> Self {
        let bars = MultiProgress::new();
        let style =
            ProgressStyle::with_template("{prefix:>9} [{bar:40.cyan/blue}] {pos:>4}/{len:4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let mut map = HashMap::new();
        for (stage, name) in STAGES {
            if !stages.contains(&stage) {
                continue;
            }
            // Rows that arrived with a summary need no Generate: no bar for nothing to do.
            if stage == pb::Stage::Generate && totals.without_summary == 0 {
                continue;
            }
            let len = gateway::pipeline::stage_progress(&totals, stage).total;
            let bar = bars.add(
                ProgressBar::new(u64::from(len))
                    .with_style(style.clone())
                    .with_prefix(name),
            );
            map.insert(stage as i32, bar);
        }
        Self { bars, stages: map }
    }

    pub fn println(&self, line: &str) {
        let _ = self.bars.println(line);
    }

    pub fn on_event(&mut self, event: &pb::RunEvent) {
        match &event.kind {
            Some(Kind::Item(item)) => {
                if let Some(bar) = self.stages.get(&item.stage) {
                    bar.inc(1);
                    bar.set_message(item.outcome.clone());
                }
            }
            Some(Kind::Training(job)) => {
                let Some(bar) = self.stages.get(&(pb::Stage::Finetune as i32)) else {
                    return;
                };
                match &job.kind {
                    Some(pb::job_event::Kind::Started(s)) => bar.set_length(s.total_steps),
                    Some(pb::job_event::Kind::Step(s)) => {
                        bar.set_length(s.total_steps);
                        bar.set_position(s.step);
                        bar.set_message(format!("loss {:.3}", s.loss));
                    }
                    _ => {}
                }
            }
            // A stage (re)started: a resumed run has done part of it already.
            Some(Kind::Stage(s)) if s.started => {
                if let (Some(bar), Some(p)) = (self.stages.get(&s.stage), &s.progress) {
                    bar.set_length(u64::from(p.total));
                    bar.set_position(u64::from(p.done));
                }
            }
            Some(Kind::Stage(s)) if !s.started => {
                if let Some(bar) = self.stages.get(&s.stage) {
                    bar.finish();
                }
            }
            Some(Kind::BadRow(row)) => self.println(&format!(
                "bad row at line {}: {}: {}",
                row.line, row.field, row.message
            )),
            Some(Kind::Warning(w)) => self.println(&format!("warning: {w}")),
            Some(Kind::Waiting(w)) => self.println(&waiting_line(w)),
            _ => {}
        }
    }
}

/// "waiting for the editor: UNAVAILABLE (connection refused), retry 3 in 4 s", or that it
/// answers again.
pub fn waiting_line(w: &pb::Waiting) -> String {
    if w.recovered {
        return format!("{} answers again after {} retries", w.service, w.attempt);
    }
    format!(
        "waiting for {}: {} ({}), retry {} in {:.0} s",
        w.service,
        w.code,
        w.message,
        w.attempt,
        (w.retry_in_ms as f64 / 1000.0).ceil()
    )
}
