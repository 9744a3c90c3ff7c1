use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Characters of a conversation id.
pub const MAX_ID_CHARS: usize = 256;

/// Who spoke a turn. `bot` is an automated agent, `system` a note from the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Agent,
    Bot,
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Agent => "agent",
            Role::Bot => "bot",
            Role::System => "system",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub text: String,
}

/// A customer-service conversation, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    /// Where it happened: chat, bot, email, webform, twitter, ...
    pub channel: String,
    pub turns: Vec<Turn>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// One dataset row: a conversation, the teacher's summary of it, human references where the
/// corpus has them, and (in benchmark files) the error categories injected into the summary.
///
/// Serialized flat (the conversation's fields at the top level). Deserialized through a flat
/// twin, because serde's `flatten` hides field paths, and a bad row must name its field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "FlatRecord")]
pub struct Record {
    #[serde(flatten)]
    pub conversation: Conversation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// Benchmark labels: the error categories present in `summary` (empty when it is clean).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Benchmark provenance: what was changed in `summary`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub injections: Vec<String>,
}

#[derive(Deserialize)]
struct FlatRecord {
    id: String,
    channel: String,
    turns: Vec<Turn>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    references: Vec<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    injections: Vec<String>,
}

impl From<FlatRecord> for Record {
    fn from(r: FlatRecord) -> Self {
        Record {
            conversation: Conversation {
                id: r.id,
                channel: r.channel,
                turns: r.turns,
                metadata: r.metadata,
            },
            summary: r.summary,
            references: r.references,
            labels: r.labels,
            injections: r.injections,
        }
    }
}

impl Record {
    /// Checks what serde cannot: required text is present, ids are short and printable.
    /// Returns the offending field's path.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let c = &self.conversation;
        if c.id.trim().is_empty() {
            return Err(("id".into(), "must not be empty".into()));
        }
        // Ids name items in events, logs and exports: short, and printable.
        if c.id.chars().count() > MAX_ID_CHARS {
            return Err(("id".into(), format!("at most {MAX_ID_CHARS} characters")));
        }
        if c.id.chars().any(char::is_control) {
            return Err(("id".into(), "must not contain control characters".into()));
        }
        if c.turns.is_empty() {
            return Err((
                "turns".into(),
                "a conversation needs at least one turn".into(),
            ));
        }
        if let Some(i) = c.turns.iter().position(|t| t.text.trim().is_empty()) {
            return Err((format!("turns[{i}].text"), "must not be empty".into()));
        }
        if matches!(&self.summary, Some(s) if s.trim().is_empty()) {
            return Err(("summary".into(), "must not be empty when present".into()));
        }
        Ok(())
    }
}
