//! The trainer, as Finetune calls it: create a job, follow its events from a sequence number
//! (resumable across gateway restarts), read its state, cancel it.

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_proto::v1 as pb;
use arf_proto::v1::trainer_client::TrainerClient;
use tonic::{Status, Streaming};

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
