//! Export's query: the preference pairs that revision makes, a page at a time.

// Part of `items`: its types, columns and row reader.
use super::*;

/// One accepted revision beside the teacher's summary it replaced or a candidate it beat: a
/// (chosen, rejected) pair for preference training (DPO).
#[derive(Debug, Clone)]
pub struct PreferencePair {
    pub conversation: Conversation,
    /// The accepted revision: the analyzer found it better and the fidelity guard passed it.
    pub chosen: String,
    /// The teacher's summary, as the teacher wrote it, or a candidate revision ranked below
    /// the accepted one.
    pub rejected: String,
    /// Where `rejected` came from: "teacher" or "candidate".
    pub rejected_source: &'static str,
}

impl Store {
    /// The preference pairs among the next `limit` training items after `after` (a position
    /// from the previous page; 0 at the start), in dataset order, and the position of the last
    /// item read (`None`: no more items). A pair per revision the gate accepted, by the editor
    /// or by rule, against the teacher's summary, then one against each candidate it beat (best-
    /// of-n and later rounds); a text identical to the accepted one teaches no preference and is
    /// left out.
    pub async fn preference_pairs_page(
        &self,
        run_id: &str,
        after: i64,
        limit: usize,
    ) -> anyhow::Result<(Vec<PreferencePair>, Option<i64>)> {
        let condition = "split = 'train' AND final_summary IS NOT NULL";
        let items = self.page_by_rowid(run_id, condition, after, limit).await?;
        let last = items.last().map(|(_, rowid)| *rowid);
        let mut pairs = Vec::new();
        for (item, _) in items {
            if !item.revision_outcome.is_some_and(|o| o.is_revised()) {
                continue;
            }
            let Some(chosen) = item.final_summary else {
                continue;
            };
            let rejected = std::iter::once((item.teacher_summary, "teacher")).chain(
                item.losing_candidates
                    .into_iter()
                    .map(|c| (c.summary, "candidate")),
            );
            for (rejected, rejected_source) in rejected {
                if rejected != chosen {
                    pairs.push(PreferencePair {
                        conversation: item.conversation.clone(),
                        chosen: chosen.clone(),
                        rejected,
                        rejected_source,
                    });
                }
            }
        }
        Ok((pairs, last))
    }
}
