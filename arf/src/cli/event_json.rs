//! A run's events as protobuf's JSON mapping (proto3 JSON: camelCase names, enums by name,
//! 64-bit integers as strings), the form any protobuf library reads back: `arf watch
//! --output json` prints one a line for scripts. Read through the descriptor set the
//! servers hand to reflection, so it follows the contract without code of its own per field.

use std::sync::OnceLock;

use arf_proto::v1 as pb;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

fn run_event_descriptor() -> anyhow::Result<MessageDescriptor> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    let pool = POOL
        .get_or_init(|| {
            DescriptorPool::decode(arf_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("the arf.v1 descriptor set: {e}"))?;
    pool.get_message_by_name("arf.v1.RunEvent")
        .ok_or_else(|| anyhow::anyhow!("arf.v1.RunEvent is not in the descriptor set"))
}

/// One event, as one line of JSON.
pub fn to_json(event: &pb::RunEvent) -> anyhow::Result<String> {
    let message =
        DynamicMessage::decode(run_event_descriptor()?, event.encode_to_vec().as_slice())?;
    Ok(serde_json::to_string(&message)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_training_step_reads_back_by_its_json_names() {
        let event = pb::RunEvent {
            sequence: 27,
            run_id: "run-1".into(),
            time: None,
            kind: Some(pb::run_event::Kind::Training(pb::JobEvent {
                job_id: "job-1".into(),
                kind: Some(pb::job_event::Kind::Step(pb::StepEvent {
                    step: 27,
                    total_steps: 60,
                    loss: 2.5,
                    ..Default::default()
                })),
                ..Default::default()
            })),
        };
        let line = to_json(&event).unwrap();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["sequence"], "27", "{v}");
        assert_eq!(v["runId"], "run-1");
        assert_eq!(v["training"]["step"]["totalSteps"], "60");
        assert_eq!(v["training"]["step"]["loss"], 2.5);
    }

    #[test]
    fn a_stage_change_names_its_stage() {
        let event = pb::RunEvent {
            sequence: 1,
            kind: Some(pb::run_event::Kind::Stage(pb::StageChanged {
                stage: pb::Stage::Revise as i32,
                started: true,
                ..Default::default()
            })),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::from_str(&to_json(&event).unwrap()).unwrap();
        assert_eq!(v["stage"]["stage"], "STAGE_REVISE", "{v}");
        assert_eq!(v["stage"]["started"], true);
    }
}
