//! Progress for a run, fed by its events: bars on a terminal, plain lines elsewhere (a file,
//! a pipe, a CI log), where bars would be hidden and a long stage would pass in silence.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use arf_proto::v1 as pb;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pb::run_event::Kind;

pub struct RunProgress {
    bars: MultiProgress,
    stages: HashMap<i32, ProgressBar>,
    /// Without a terminal: when each stage's progress was last printed, and where it was.
    plain: Option<HashMap<i32, (Instant, u64)>>,
}

/// Without a terminal, a stage's progress is printed every this share of it...
const PLAIN_STEP: f64 = 0.05;
/// ...or after this long, whichever comes first.
const PLAIN_EVERY: Duration = Duration::from_secs(30);

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
        let plain = (!std::io::stderr().is_terminal()).then(HashMap::new);
        Self {
            bars,
            stages: map,
            plain,
        }
    }

    pub fn println(&self, line: &str) {
        if self.plain.is_some() {
            eprintln!("{line}");
        } else {
            let _ = self.bars.println(line);
        }
    }

    pub fn on_event(&mut self, event: &pb::RunEvent) {
        self.update_bars(event);
        self.print_plain(event);
    }

    /// Without a terminal: each stage change and run state, and each stage's progress every
    /// few percent or half a minute.
    fn print_plain(&mut self, event: &pb::RunEvent) {
        let Some(printed) = &mut self.plain else {
            return;
        };
        let stage = match &event.kind {
            Some(Kind::Stage(_) | Kind::State(_)) => {
                eprintln!("{}", event_line(event));
                return;
            }
            Some(Kind::Item(item)) => item.stage,
            Some(Kind::Training(_)) => pb::Stage::Finetune as i32,
            _ => return,
        };
        let Some(bar) = self.stages.get(&stage) else {
            return;
        };
        let (done, total) = (bar.position(), bar.length().unwrap_or(0).max(1));
        let (at, was) = printed.entry(stage).or_insert((Instant::now(), 0));
        if done < *was {
            *was = 0; // the next training job of the stage starts from step 0
        }
        let moved = (done - *was) as f64 / total as f64;
        if moved >= PLAIN_STEP || at.elapsed() >= PLAIN_EVERY || done == total {
            if done == *was {
                return;
            }
            (*at, *was) = (Instant::now(), done);
            let name = bar.prefix();
            let message = bar.message();
            eprintln!(
                "{} {done}/{total} ({:.0}%) {message}",
                name.trim(),
                done as f64 * 100.0 / total as f64
            );
        }
    }

    fn update_bars(&mut self, event: &pb::RunEvent) {
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

/// One event as a person reads it: `revise started`, `ANALYZE c12 flagged (2 findings)`,
/// `training step 27/60 loss 2.10 lr 1.2e-4 196 tok/s`.
pub fn event_line(e: &pb::RunEvent) -> String {
    let stage = |s: i32| pb::Stage::try_from(s).map_or("?", |s| s.as_str_name());
    match &e.kind {
        Some(Kind::State(s)) => format!(
            "state {}",
            pb::RunState::try_from(*s).map_or("?", |s| s.as_str_name())
        ),
        Some(Kind::Stage(s)) => format!(
            "{} {}",
            stage(s.stage),
            if s.started { "started" } else { "finished" }
        ),
        Some(Kind::Item(i)) => format!(
            "{} {} {} ({} findings)",
            stage(i.stage),
            i.conversation_id,
            i.outcome,
            i.findings
        ),
        Some(Kind::BadRow(b)) => format!("bad row at line {}: {}: {}", b.line, b.field, b.message),
        Some(Kind::Training(j)) => format!("training {}", job_line(j)),
        Some(Kind::Warning(w)) => format!("warning {w}"),
        Some(Kind::Waiting(w)) => waiting_line(w),
        None => "?".into(),
    }
}

/// A training job's event: `step 27/60 loss 2.10 lr 1.2e-4 196 tok/s`.
fn job_line(j: &pb::JobEvent) -> String {
    use pb::job_event::Kind as Job;
    let state = |s: i32| pb::JobState::try_from(s).map_or("?", |s| s.as_str_name());
    match &j.kind {
        Some(Job::Queued(s)) => format!("job {} {}", j.job_id, state(*s)),
        Some(Job::Started(s)) => format!(
            "job {} started: {} steps, {} train / {} eval examples{}",
            j.job_id,
            s.total_steps,
            s.train_examples,
            s.eval_examples,
            if s.resumed {
                format!(", resumed at step {}", s.from_step)
            } else {
                String::new()
            }
        ),
        Some(Job::Step(s)) => format!(
            "step {}/{} loss {:.2} lr {:.1e} {:.0} tok/s",
            s.step, s.total_steps, s.loss, s.learning_rate, s.tokens_per_second
        ),
        Some(Job::Eval(s)) => format!("eval at step {}: loss {:.2}", s.step, s.eval_loss),
        Some(Job::Checkpoint(c)) => format!("checkpoint at step {}", c.step),
        Some(Job::Ended(end)) if end.error.is_empty() => {
            format!("job {} ended {}", j.job_id, state(end.state))
        }
        Some(Job::Ended(end)) => {
            format!("job {} ended {}: {}", j.job_id, state(end.state), end.error)
        }
        Some(Job::Warning(w)) => format!("warning: {w}"),
        None => "?".into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_training_step_reads_as_people_read_it() {
        let event = pb::RunEvent {
            sequence: 27,
            kind: Some(Kind::Training(pb::JobEvent {
                job_id: "job-1".into(),
                kind: Some(pb::job_event::Kind::Step(pb::StepEvent {
                    step: 27,
                    total_steps: 60,
                    loss: 2.1037686665852866,
                    learning_rate: 1.2e-4,
                    tokens_per_second: 196.4,
                    ..Default::default()
                })),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            event_line(&event),
            "training step 27/60 loss 2.10 lr 1.2e-4 196 tok/s"
        );
    }
}
