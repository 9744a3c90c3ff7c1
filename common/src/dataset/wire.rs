//! The dataset model on the wire (`arf.v1.Conversation`), both ways, for every service.

use arf_proto::v1 as pb;
use tonic::Status;

use super::{Conversation, Role, Turn};
use crate::status::invalid_field;

/// A conversation from a request; errors name the field by its path under `field`.
pub fn conversation_from_wire(
    c: Option<pb::Conversation>,
    field: &str,
) -> Result<Conversation, Status> {
    let c = c.ok_or_else(|| invalid_field(field, "is required"))?;
    let turns = c
        .turns
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(Turn {
                role: role_from_wire(t.role, &format!("{field}.turns[{i}].role"))?,
                text: t.text,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(Conversation {
        id: c.id,
        channel: c.channel,
        turns,
        metadata: c.metadata.into_iter().collect(),
    })
}

pub fn conversation_to_wire(c: &Conversation) -> pb::Conversation {
    pb::Conversation {
        id: c.id.clone(),
        channel: c.channel.clone(),
        turns: c
            .turns
            .iter()
            .map(|t| pb::Turn {
                role: role_to_wire(t.role) as i32,
                text: t.text.clone(),
            })
            .collect(),
        metadata: c
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub fn role_from_wire(value: i32, field: &str) -> Result<Role, Status> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Customer) => Ok(Role::Customer),
        Ok(pb::Role::Agent) => Ok(Role::Agent),
        Ok(pb::Role::Bot) => Ok(Role::Bot),
        Ok(pb::Role::System) => Ok(Role::System),
        Ok(pb::Role::Unspecified) | Err(_) => Err(invalid_field(
            field,
            "must be customer, agent, bot or system",
        )),
    }
}

pub fn role_to_wire(role: Role) -> pb::Role {
    match role {
        Role::Customer => pb::Role::Customer,
        Role::Agent => pb::Role::Agent,
        Role::Bot => pb::Role::Bot,
        Role::System => pb::Role::System,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_a_bad_role() {
        let c = Conversation {
            id: "x".into(),
            channel: "email".into(),
            turns: vec![
                Turn {
                    role: Role::Bot,
                    text: "hi".into(),
                },
                Turn {
                    role: Role::Customer,
                    text: "yo".into(),
                },
            ],
            metadata: [("k".to_string(), "v".to_string())].into(),
        };
        assert_eq!(
            conversation_from_wire(Some(conversation_to_wire(&c)), "conversation").unwrap(),
            c
        );
        let mut wire = conversation_to_wire(&c);
        wire.turns[1].role = 42;
        let status = conversation_from_wire(Some(wire), "rows[3].conversation").unwrap_err();
        assert_eq!(
            crate::status::field_violations(&status)[0].0,
            "rows[3].conversation.turns[1].role"
        );
    }
}
