//! The trainer, as Finetune calls it: create a job, follow its events from a sequence number
//! (resumable across gateway restarts), read its state, cancel it.

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_proto::v1 as pb;
use arf_proto::v1::trainer_client::TrainerClient;
use prost::Message;
use tonic::{Status, Streaming};

/// The most bytes of examples one upload message carries: far under any message limit.
pub const UPLOAD_CHUNK_BYTES: usize = 1 << 20;

/// Cuts examples into upload messages of at most [`UPLOAD_CHUNK_BYTES`] as they come (one larger
/// example goes alone; the trainer's own limit decides it).
#[derive(Default)]
pub struct Chunker {
    chunk: pb::UploadExamplesRequest,
    bytes: usize,
}

impl Chunker {
    /// Adds an example; returns the message it completed, if any.
    pub fn push(&mut self, example: pb::TrainingExample) -> Option<pb::UploadExamplesRequest> {
        let size = example.encoded_len();
        let full = (self.bytes + size > UPLOAD_CHUNK_BYTES && !self.chunk.examples.is_empty())
            .then(|| {
                self.bytes = 0;
                std::mem::take(&mut self.chunk)
            });
        self.bytes += size;
        self.chunk.examples.push(example);
        full
    }

    /// The last message, if any example is left.
    pub fn finish(self) -> Option<pb::UploadExamplesRequest> {
        (!self.chunk.examples.is_empty()).then_some(self.chunk)
    }
}

#[derive(Clone)]
pub struct Trainer {
    client: TrainerClient<GrpcChannel>,
}

impl Trainer {
    pub fn connect(
        endpoint: &str,
        options: &ClientOptions,
        max_message_bytes: usize,
    ) -> anyhow::Result<Self> {
        let client = TrainerClient::new(connect_lazy(endpoint, options)?)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        Ok(Self { client })
    }

    /// Streams `examples` in chunks of at most [`UPLOAD_CHUNK_BYTES`], however many there
    /// are (one message could carry only as many as its size limit allows); returns the
    /// upload's id, for `CreateJobRequest.upload_id`.
    /// Uploads the examples the stream's messages carry; returns the upload's id.
    pub async fn upload_examples(
        &self,
        chunks: impl futures::Stream<Item = pb::UploadExamplesRequest> + Send + 'static,
    ) -> Result<String, Status> {
        Ok(self
            .client
            .clone()
            .upload_examples(chunks)
            .await?
            .into_inner()
            .upload_id)
    }

    /// Whether the trainer would train `base` with `hyperparameters` (CreateJob's
    /// `validate_only`: nothing is created).
    pub async fn validate_job(
        &self,
        base: &str,
        hyperparameters: Option<pb::Hyperparameters>,
    ) -> Result<(), Status> {
        self.client
            .clone()
            .create_job(pb::CreateJobRequest {
                base_model_dir: base.into(),
                hyperparameters,
                validate_only: true,
                ..Default::default()
            })
            .await
            .map(drop)
    }

    /// Returns the new job's id.
    pub async fn create_job(&self, request: pb::CreateJobRequest) -> Result<String, Status> {
        Ok(self
            .client
            .clone()
            .create_job(request)
            .await?
            .into_inner()
            .id)
    }

    /// The job's events after `after_sequence`, to its `Ended` event.
    pub async fn watch(
        &self,
        job_id: &str,
        after_sequence: u64,
    ) -> Result<Streaming<pb::JobEvent>, Status> {
        let request = pb::WatchJobRequest {
            job_id: job_id.to_string(),
            after_sequence,
        };
        Ok(self.client.clone().watch_job(request).await?.into_inner())
    }

    pub async fn get_job(&self, job_id: &str) -> Result<pb::Job, Status> {
        let request = pb::GetJobRequest {
            job_id: job_id.to_string(),
        };
        Ok(self.client.clone().get_job(request).await?.into_inner())
    }

    pub async fn cancel(&self, job_id: &str) -> Result<(), Status> {
        self.client
            .clone()
            .cancel_job(pb::CancelJobRequest {
                job_id: job_id.to_string(),
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_chunked_under_the_limit_and_in_order() {
        let example = |i: usize| pb::TrainingExample {
            conversation: None,
            summary: format!("{i:06}{}", "x".repeat(100_000)),
        };
        let examples: Vec<_> = (0..25).map(example).collect();
        let mut chunker = Chunker::default();
        let mut chunks: Vec<_> = examples
            .iter()
            .filter_map(|e| chunker.push(e.clone()))
            .collect();
        chunks.extend(chunker.finish());
        assert!(chunks.len() >= 3, "{}", chunks.len());
        for c in &chunks {
            assert!(c.encoded_len() <= UPLOAD_CHUNK_BYTES + 64);
        }
        let flat: Vec<_> = chunks.into_iter().flat_map(|c| c.examples).collect();
        assert_eq!(flat, examples);
    }
}
