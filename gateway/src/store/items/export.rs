//! Export's query: the preference pairs that revision makes, a page at a time.

// Part of `items`: its types, columns and row reader.
use super::*;

/// One accepted revision beside the teacher's summary it replaced: a (chosen, rejected) pair
/// for preference training (DPO).
#[derive(Debug, Clone)]
pub struct PreferencePair {
    pub conversation: Conversation,
    /// The accepted revision: the analyzer found it better and the fidelity guard passed it.
    pub chosen: String,
    /// The teacher's summary, as the teacher wrote it.
    pub rejected: String,
}

impl Store {
    /// The preference pairs among the next `limit` training items after `after` (a position
    /// from the previous page; 0 at the start), in dataset order, and the position of the last
    /// item read (`None`: no more items). A pair per revision the gate accepted, by the editor
    /// or by rule; a revision identical to the teacher's text teaches no preference and is left
    /// out.
    pub async fn preference_pairs_page(
        &self,
        run_id: &str,
        after: i64,
        limit: usize,
    ) -> anyhow::Result<(Vec<PreferencePair>, Option<i64>)> {
        let condition = "split = 'train' AND final_summary IS NOT NULL";
        let items = self.page_by_rowid(run_id, condition, after, limit).await?;
        let last = items.last().map(|(_, rowid)| *rowid);
        let pairs = items
            .into_iter()
            .filter_map(|(i, _)| {
                let revised = i.revision_outcome.is_some_and(|o| o.is_revised());
                let chosen = i
                    .final_summary
                    .filter(|s| revised && *s != i.teacher_summary)?;
                Some(PreferencePair {
                    conversation: i.conversation,
                    chosen,
                    rejected: i.teacher_summary,
                })
            })
            .collect();
        Ok((pairs, last))
    }
}
