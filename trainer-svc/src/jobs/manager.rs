//! The job manager: accepts jobs, persists them, and trains them one at a time on a dedicated
//! thread (candle work is synchronous and must never block the async runtime).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use arf_common::paths::PathRoots;

use candle_core::Device;
use tokio::sync::watch;

use super::store::Store;
use super::uploads::{UploadLimits, UploadWriter, Uploads};
use super::{
    EventKind, Job, JobData, JobError, JobEvent, JobSpec, JobState, now_ms, validate_spec,
};
use crate::model::fused::threads;
use crate::train::ExampleFile;
use crate::train::checkpoint;
use crate::train::{Event, Observer, Outcome, TrainError, train};

/// Starts of a job that may end without the job ending (the worker died) before it is failed.
pub const MAX_ATTEMPTS: u32 = 3;

struct State {
    jobs: BTreeMap<String, Job>,
    events: HashMap<String, Vec<JobEvent>>,
    queue: VecDeque<String>,
    /// Set to stop the running job at its next step.
    cancel: HashMap<String, Arc<AtomicBool>>,
    shutting_down: bool,
}

/// A job as its `Ended` event leaves it: its final state, error, outputs and end time.
fn apply_end(job: &mut Job, end: &EventKind, time_ms: u64) {
    if let EventKind::Ended {
        state,
        error,
        adapter_dir,
        merged_dir,
    } = end
    {
        job.state = *state;
        job.error = error.clone();
        job.adapter_dir = adapter_dir.clone();
        job.merged_dir = merged_dir.clone();
        job.end_time_ms = Some(time_ms);
    }
}

/// A job whose `job.json` cannot be read, as it is listed: failed, with why, and an `Ended`
/// event so that a watch ends. Held in memory only: its folder stays as it was, for an operator.
fn quarantined(u: &super::store::Unreadable, output_dir: PathBuf) -> (Job, Vec<JobEvent>) {
    let error = format!(
        "the trainer cannot read this job's job.json ({}); it is quarantined: not run, its \
         folder left as it was for an operator to inspect",
        u.error
    );
    let end = EventKind::Ended {
        state: JobState::Failed,
        error,
        adapter_dir: None,
        merged_dir: None,
    };
    let config = crate::train::TrainConfig::with_defaults(Path::new(""), output_dir);
    let mut job = Job::queued(u.id.clone(), String::new(), config, PathBuf::new());
    let now = job.create_time_ms;
    apply_end(&mut job, &end, now);
    job.last_event_sequence = 1;
    let ended = JobEvent {
        sequence: 1,
        job_id: u.id.clone(),
        time_ms: now,
        kind: end,
    };
    (job, vec![ended])
}

/// The job created with this idempotency key, if any (an empty key matches nothing).
fn find_by_key(st: &State, request_id: &str) -> Option<Job> {
    if request_id.is_empty() {
        return None;
    }
    st.jobs
        .values()
        .find(|j| j.request_id == request_id)
        .cloned()
}

struct Inner {
    store: Store,
    uploads: Uploads,
    state: Mutex<State>,
    wake: Condvar,
    /// Bumped on every event of any job: watchers wait on it, then read what is new.
    notify: watch::Sender<u64>,
    device: Device,
    counter: AtomicU64,
    /// Stops the running job without ending it (a restart): it resumes from its checkpoint.
    halt: Arc<AtomicBool>,
    /// Where client-named models and datasets may be, judged again when a job trains (set once
    /// by a served trainer; unset: any path, as for the embedded suite).
    client_paths: OnceLock<ClientPaths>,
}

/// The folders a served trainer reads client-named files from (`--model-root`,
/// `--dataset-root`).
#[derive(Clone, Debug)]
pub struct ClientPaths {
    pub models: PathRoots,
    pub datasets: PathRoots,
}

/// Cheap to clone; all clones share one queue and one worker thread.
#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

impl JobManager {
    /// Opens (or creates) the state directory, re-queues jobs that were queued or running when
    /// the trainer stopped (running ones resume from their last checkpoint), and starts the worker.
    pub fn open(state_dir: &Path, device: Device) -> Result<Self, JobError> {
        Self::open_with(state_dir, device, UploadLimits::default())
    }

    /// [`Self::open`] with the limits on what uploads may hold.
    pub fn open_with(
        state_dir: &Path,
        device: Device,
        upload_limits: UploadLimits,
    ) -> Result<Self, JobError> {
        let store = Store::open(state_dir)?;
        let mut crash_looped = Vec::new();
        let mut state = State {
            jobs: BTreeMap::new(),
            events: HashMap::new(),
            queue: VecDeque::new(),
            cancel: HashMap::new(),
            shutting_down: false,
        };
        let (stored, unreadable) = store.load_all()?;
        for u in &unreadable {
            tracing::error!(job_id = %u.id, path = %u.path.display(), error = %u.error,
                "quarantined a job whose job.json cannot be read: it is listed as failed and its folder left as it is");
            let (job, events) = quarantined(u, store.output_dir(&u.id));
            state.events.insert(job.id.clone(), events);
            state.jobs.insert(job.id.clone(), job);
        }
        for (mut job, events) in stored {
            // job.json is saved after each event's append, so it never counts past the log;
            // should the log have lost its tail anyway (a disk that acknowledged a flush it had
            // not made), numbering goes on above both: a number is never handed out twice.
            job.last_event_sequence = job
                .last_event_sequence
                .max(events.last().map_or(0, |e| e.sequence));
            // The `Ended` event is appended before job.json is rewritten: a trainer killed
            // between the two left a finished job that looks unfinished. Its log has the end.
            if !job.state.is_final()
                && let Some(last) = events.last()
                && matches!(last.kind, EventKind::Ended { .. })
            {
                apply_end(&mut job, &last.kind, last.time_ms);
                store.save_job(&job)?;
            }
            let crash_looping = !job.state.is_final() && job.attempts >= MAX_ATTEMPTS;
            if !job.state.is_final() && !crash_looping {
                job.state = JobState::Queued;
                state.queue.push_back(job.id.clone());
            }
            let id = job.id.clone();
            state.events.insert(id.clone(), events);
            state.jobs.insert(id.clone(), job);
            if crash_looping {
                crash_looped.push(id);
            }
        }
        let inner = Arc::new(Inner {
            uploads: Uploads::open(state_dir, upload_limits)?,
            store,
            state: Mutex::new(state),
            wake: Condvar::new(),
            notify: watch::channel(0).0,
            device,
            counter: AtomicU64::new(0),
            halt: Arc::new(AtomicBool::new(false)),
            client_paths: OnceLock::new(),
        });
        for id in crash_looped {
            let error = format!(
                "the trainer stopped {MAX_ATTEMPTS} times while training this job (out of memory? \
                 see the trainer's log); failed rather than retried again"
            );
            tracing::error!(job_id = %id, "{error}");
            let end = EventKind::Ended {
                state: JobState::Failed,
                error,
                adapter_dir: None,
                merged_dir: None,
            };
            let mut st = inner.lock();
            inner.finish(&mut st, &id, end)?;
        }
        let worker = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("arf-trainer-worker".into())
            .spawn(move || worker_loop(worker))
            .map_err(|e| JobError::Storage(format!("cannot start the training thread: {e}")))?;
        Ok(Self { inner })
    }

    /// Validates, stores and queues a job; or returns the job created earlier with the same
    /// idempotency key.
    pub fn create(&self, mut spec: JobSpec) -> Result<Job, JobError> {
        if let Some(job) = self.created_with(&spec.request_id) {
            // The client asked again with a fresh upload: the job has its examples already.
            if let JobData::Uploaded(upload) = &spec.data {
                self.inner.uploads.discard(upload);
            }
            return Ok(job);
        }
        validate_spec(&spec)?;
        let id = format!(
            "job-{:013}-{:04}",
            now_ms(),
            self.inner.counter.fetch_add(1, Ordering::Relaxed) % 10_000
        );
        spec.config.output_dir = self.inner.store.output_dir(&id);
        // Every job has its folder before its first event, whatever its data: a job over a
        // server-side JSONL file had none, so its first event failed with INTERNAL.
        self.inner.store.create_job_dir(&id)?;
        let data_path = match &spec.data {
            JobData::Inline(examples) => self.inner.store.save_examples(&id, examples)?,
            JobData::Jsonl(p) => p.clone(),
            JobData::Uploaded(upload) => {
                self.inner.uploads.forget(upload);
                self.inner.store.claim_upload(&id, upload)?
            }
        };
        let job = Job {
            labels: spec.labels,
            request_id: spec.request_id,
            trace_context: spec.trace_context,
            ..Job::queued(id.clone(), spec.display_name, spec.config, data_path)
        };
        let mut st = self.lock();
        // Two calls with one key can pass the first look together: only one job is kept.
        if let Some(first) = find_by_key(&st, &job.request_id) {
            drop(st);
            self.inner.store.remove_job_files(&id);
            return Ok(first);
        }
        st.jobs.insert(id.clone(), job);
        if let Err(e) = self.inner.record(&mut st, &id, EventKind::Queued) {
            // Not stored, so not a job: nothing is left queued that would never run.
            st.jobs.remove(&id);
            drop(st);
            self.inner.store.remove_job_files(&id);
            return Err(e);
        }
        st.queue.push_back(id.clone());
        let job = st.jobs[&id].clone();
        drop(st);
        self.inner.wake.notify_all();
        Ok(job)
    }

    /// Starts receiving an upload of examples.
    pub fn begin_upload(&self) -> Result<UploadWriter, JobError> {
        self.inner.uploads.begin()
    }

    /// The file of the finished upload `id`, for a CreateJob that names it.
    pub fn finished_upload(&self, id: &str) -> Result<PathBuf, JobError> {
        self.inner.uploads.finished(id)
    }

    fn created_with(&self, request_id: &str) -> Option<Job> {
        find_by_key(&self.lock(), request_id)
    }

    pub fn get(&self, id: &str) -> Result<Job, JobError> {
        self.lock()
            .jobs
            .get(id)
            .cloned()
            .ok_or_else(|| JobError::NotFound(id.into()))
    }

    /// Jobs in creation order, `page_size` at a time from after `page_token` (a job id);
    /// returns the page and the next token (empty on the last page).
    pub fn list(&self, page_size: usize, page_token: &str) -> (Vec<Job>, String) {
        let st = self.lock();
        let mut page: Vec<Job> = st
            .jobs
            .range::<str, _>((
                std::ops::Bound::Excluded(page_token),
                std::ops::Bound::Unbounded,
            ))
            .take(page_size + 1)
            .map(|(_, j)| j.clone())
            .collect();
        let next = if page.len() > page_size {
            page.truncate(page_size);
            page.last().map(|j| j.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        (page, next)
    }

    /// A queued job ends at once; a running one stops before its next step (its checkpoints
    /// stay). Cancelling a finished job changes nothing.
    pub fn cancel(&self, id: &str) -> Result<Job, JobError> {
        let mut st = self.lock();
        let job = st
            .jobs
            .get(id)
            .ok_or_else(|| JobError::NotFound(id.into()))?;
        match job.state {
            JobState::Queued => {
                st.queue.retain(|q| q != id);
                let end = EventKind::Ended {
                    state: JobState::Cancelled,
                    error: String::new(),
                    adapter_dir: None,
                    merged_dir: None,
                };
                self.inner.finish(&mut st, id, end)?;
            }
            JobState::Running => {
                if let Some(flag) = st.cancel.get(id) {
                    flag.store(true, Ordering::SeqCst);
                }
            }
            _ => {}
        }
        Ok(st.jobs[id].clone())
    }

    /// Events of `id` with a sequence above `after`.
    /// The job's newest event.
    pub fn last_event(&self, id: &str) -> Result<Option<JobEvent>, JobError> {
        let st = self.lock();
        let events = st
            .events
            .get(id)
            .ok_or_else(|| JobError::NotFound(id.into()))?;
        Ok(events.last().cloned())
    }

    pub fn events_after(&self, id: &str, after: u64) -> Result<Vec<JobEvent>, JobError> {
        let st = self.lock();
        let events = st
            .events
            .get(id)
            .ok_or_else(|| JobError::NotFound(id.into()))?;
        Ok(events
            .iter()
            .filter(|e| e.sequence > after)
            .cloned()
            .collect())
    }

    /// Changes whenever any job has a new event.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.notify.subscribe()
    }

    /// `(step, path, creation time ms)` of the job's checkpoints, oldest first.
    pub fn checkpoints(&self, id: &str) -> Result<Vec<(u64, PathBuf, u64)>, JobError> {
        let job = self.get(id)?;
        Ok(checkpoint::list(&job.config.output_dir)
            .into_iter()
            .map(|(step, path)| {
                let ms = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                (step, path, ms)
            })
            .collect())
    }

    /// The adapter directory of the finished job, or of one of its checkpoints.
    pub fn adapter_dir(&self, id: &str, checkpoint_step: Option<u64>) -> Result<PathBuf, JobError> {
        let job = self.get(id)?;
        match checkpoint_step {
            None => job
                .adapter_dir
                .clone()
                .filter(|d| d.exists())
                .ok_or_else(|| JobError::NotReady {
                    id: id.into(),
                    message: format!("has no final adapter (state {:?})", job.state),
                }),
            Some(step) => checkpoint::list(&job.config.output_dir)
                .into_iter()
                .find(|(s, _)| *s == step)
                .map(|(_, p)| checkpoint::adapter_dir(&p))
                .ok_or_else(|| JobError::NotFound(format!("{id} checkpoint {step}"))),
        }
    }

    /// Client-named models and datasets only under these folders, when jobs train as when they
    /// are created (a served trainer sets it once, at start).
    pub fn confine_client_paths(&self, paths: ClientPaths) {
        if self.inner.client_paths.set(paths).is_err() {
            tracing::warn!("the trainer's client paths were already confined; kept the first");
        }
    }

    /// Stops the worker as a process exit would: the running job stops before its next step
    /// and stays RUNNING on disk, so the next [`JobManager::open`] resumes it.
    pub fn shutdown(&self) {
        self.inner.halt.store(true, Ordering::SeqCst);
        self.lock().shutting_down = true;
        self.inner.wake.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }
}

impl Inner {
    /// A job's examples. A file the client named (`jsonl_path`) is confined again as it is
    /// opened: it was checked at CreateJob, and may have become a link to elsewhere since.
    fn read_examples(&self, id: &str, job: &Job) -> Result<ExampleFile, TrainError> {
        let Some(paths) = self.client_paths.get() else {
            return ExampleFile::open(&job.data_path);
        };
        if job.data_path.starts_with(self.store.job_dir(id)) {
            return ExampleFile::open(&job.data_path);
        }
        let opened = paths
            .datasets
            .open("jsonl_path", &job.data_path.display().to_string())
            .map_err(|s| TrainError::Data(s.message().to_string()))?;
        ExampleFile::from_opened(opened.file, &opened.path)
    }

    /// The base model's files, judged where they lie now, just before they are loaded.
    fn check_base_model(&self, job: &Job) -> Result<(), TrainError> {
        match self.client_paths.get() {
            Some(paths) => paths
                .models
                .check_model("base_model_dir", &job.config.base_model_dir)
                .map_err(|s| TrainError::Data(s.message().to_string())),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event (memory and disk), updates the job from it, and wakes watchers.
    fn record(&self, st: &mut State, id: &str, kind: EventKind) -> Result<(), JobError> {
        let Some(job) = st.jobs.get_mut(id) else {
            return Err(JobError::NotFound(id.into()));
        };
        match &kind {
            EventKind::Training(Event::Started { total_steps, .. }) => {
                job.total_steps = *total_steps
            }
            EventKind::Training(Event::Step {
                step,
                total_steps,
                loss,
                ..
            }) => {
                job.step = *step;
                job.total_steps = *total_steps;
                job.last_loss = *loss;
            }
            EventKind::Training(Event::Eval { eval_loss, .. }) => job.last_eval_loss = *eval_loss,
            _ => {}
        }
        job.last_event_sequence += 1;
        let event = JobEvent {
            sequence: job.last_event_sequence,
            job_id: id.into(),
            time_ms: now_ms(),
            kind,
        };
        self.store.append_event(&event)?;
        self.store.save_job(job)?;
        st.events.entry(id.into()).or_default().push(event);
        self.notify.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Ends a job: `end` (an `Ended` event) sets its final state and is recorded.
    fn finish(&self, st: &mut State, id: &str, end: EventKind) -> Result<(), JobError> {
        if let Some(job) = st.jobs.get_mut(id) {
            apply_end(job, &end, now_ms());
        }
        self.record(st, id, end)
    }
}

/// Feeds a run's events into the job and says when to stop.
struct JobObserver<'a> {
    inner: &'a Inner,
    id: String,
    cancel: Arc<AtomicBool>,
}

impl Observer for JobObserver<'_> {
    fn event(&mut self, event: Event) {
        if let Event::Warning(w) = &event
            && let Some(n) = w.split_whitespace().next().and_then(|n| n.parse().ok())
            && let Some(job) = self.inner.lock().jobs.get_mut(&self.id)
        {
            job.truncated_examples = n;
        }
        let kind = EventKind::Training(event);
        let mut st = self.inner.lock();
        if let Err(e) = self.inner.record(&mut st, &self.id, kind) {
            tracing::error!(job_id = %self.id, "cannot record an event: {e}");
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst) || self.inner.halt.load(Ordering::SeqCst)
    }
}

fn worker_loop(inner: Arc<Inner>) {
    loop {
        let (id, job, cancel) = {
            let mut st = inner.lock();
            let id = loop {
                if st.shutting_down {
                    return;
                }
                if let Some(id) = st.queue.pop_front() {
                    break id;
                }
                st = inner.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            };
            let cancel = Arc::new(AtomicBool::new(false));
            st.cancel.insert(id.clone(), Arc::clone(&cancel));
            let Some(job) = st.jobs.get_mut(&id) else {
                continue;
            };
            job.state = JobState::Running;
            job.start_time_ms.get_or_insert_with(now_ms);
            // Saved before training starts: a worker that dies (OOM, abort) has used it up.
            job.attempts += 1;
            let job = job.clone();
            if let Err(e) = inner.store.save_job(&job) {
                tracing::error!(job_id = %id, "cannot save the job: {e}");
            }
            (id, job, cancel)
        };
        run_job(&inner, &id, &job, cancel);
    }
}

/// The span of one job's training, linked to the CreateJob call's trace (that call ended long
/// ago, so a link rather than a parent), so the gateway's run trace leads to the training.
pub fn training_span(job: &Job) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::info_span!("arf.trainer.train", otel.name = "arf.trainer.train", job_id = %job.id,
        gen_ai.request.model = %job.config.base_model_dir.display(), gen_ai.operation.name = "fine_tuning");
    let cx = arf_common::telemetry::context_from_map(&job.trace_context);
    let linked = cx.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
    span
}

fn run_job(inner: &Inner, id: &str, job: &Job, cancel: Arc<AtomicBool>) {
    let span = training_span(job);
    let mut observer = JobObserver {
        inner,
        id: id.to_string(),
        cancel,
    };
    // A panic inside candle must fail the job, not kill the only training thread.
    let result = span.in_scope(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let examples = inner.read_examples(id, job)?;
            inner.check_base_model(job)?;
            threads::on_one_worker(|| train(&job.config, &examples, &mut observer, &inner.device))
        }))
    });
    // The training span ends with the training, before its end is told: whoever sees the job
    // ended finds its span finished too (a trace read at that moment missed it).
    drop(span);
    // The training's activations, gradients and optimizer state were freed into glibc's
    // per-thread arenas, where they stay resident (several GB for SmolLM2) while whatever runs
    // next in this process (Evaluate's hosted students) allocates beside them: give them back.
    arf_common::process::release_free_memory();
    let mut st = inner.lock();
    st.cancel.remove(id);
    let (state, error, adapter_dir, merged_dir) = match result {
        Ok(Ok(Outcome::Succeeded {
            adapter_dir,
            merged_dir,
            ..
        })) => (
            JobState::Succeeded,
            String::new(),
            Some(adapter_dir),
            merged_dir,
        ),
        Ok(Ok(Outcome::Cancelled { .. })) if inner.halt.load(Ordering::SeqCst) => {
            tracing::info!(job_id = %id, "stopped for shutdown; resumes from its last checkpoint on restart");
            // A clean stop is not a crash: it does not count against the job's attempts.
            if let Some(job) = st.jobs.get_mut(id) {
                job.attempts = job.attempts.saturating_sub(1);
                if let Err(e) = inner.store.save_job(job) {
                    tracing::error!(job_id = %id, "cannot save the job: {e}");
                }
            }
            return;
        }
        Ok(Ok(Outcome::Cancelled { .. })) => (JobState::Cancelled, String::new(), None, None),
        Ok(Err(e)) => (JobState::Failed, e.to_string(), None, None),
        Err(_) => (
            JobState::Failed,
            "training panicked".to_string(),
            None,
            None,
        ),
    };
    if state == JobState::Failed {
        tracing::error!(job_id = %id, error = %error, "training failed");
    }
    let end = EventKind::Ended {
        state,
        error,
        adapter_dir,
        merged_dir,
    };
    if let Err(e) = inner.finish(&mut st, id, end) {
        tracing::error!(job_id = %id, "cannot record the end of the job: {e}");
    }
}
