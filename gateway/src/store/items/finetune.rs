//! Finetune's queries: each student's training pairs, a page at a time.

// Part of `items`: its types, columns and row reader.
use super::*;

impl Store {
    /// The training pairs of a `student` among the next `limit` items after the item `after`
    /// (a position from the previous page; 0 at the start), in dataset order, and the position of
    /// the last item read (the next page starts after it; `None`: no more items). Finetune
    /// streams them page by page into the trainer's upload: a run's training set is never held
    /// whole by the gateway.
    pub async fn pairs_page(
        &self,
        run_id: &str,
        student: Student,
        unimproved: Unimproved,
        after: i64,
        limit: usize,
    ) -> anyhow::Result<(Vec<(Conversation, String)>, Option<i64>)> {
        if student == Student::Refined {
            let (pairs, last) = self
                .training_pairs_page(run_id, unimproved, after, limit)
                .await?;
            let pairs = pairs.into_iter().map(|p| (p.conversation, p.summary));
            return Ok((pairs.collect(), last));
        }
        let condition = match student {
            Student::Oracle => "split = 'train'",
            _ => "split = 'train' AND teacher_summary != ''",
        };
        let items = self.page_by_rowid(run_id, condition, after, limit).await?;
        let last = items.last().map(|(_, rowid)| *rowid);
        let pairs = items
            .into_iter()
            .filter_map(|(i, _)| match student {
                // The first human reference of a conversation that has one: the ceiling.
                Student::Oracle => {
                    let reference = i.references.into_iter().find(|r| !r.trim().is_empty())?;
                    Some((i.conversation, reference))
                }
                // The teacher's summaries the analyzer found nothing wrong with: flagged rows
                // dropped, nothing revised.
                Student::FilterOnly => i
                    .analysis
                    .as_ref()
                    .is_some_and(|a| a.findings.is_empty())
                    .then_some((i.conversation, i.teacher_summary)),
                // The teacher's summaries as they are: what a student learns without ARF.
                _ => Some((i.conversation, i.teacher_summary)),
            })
            .collect();
        Ok((pairs, last))
    }

    /// The refined pairs among the next `limit` revised items after `after` (see
    /// [`Self::pairs_page`]): accepted revisions, clean teacher summaries, and, when the policy
    /// keeps them, the teacher summaries that never improved.
    pub async fn training_pairs_page(
        &self,
        run_id: &str,
        unimproved: Unimproved,
        after: i64,
        limit: usize,
    ) -> anyhow::Result<(Vec<TrainingPair>, Option<i64>)> {
        let condition = "split = 'train' AND revision_outcome IS NOT NULL";
        let items = self.page_by_rowid(run_id, condition, after, limit).await?;
        let last = items.last().map(|(_, rowid)| *rowid);
        let pairs = items
            .into_iter()
            .filter_map(|(i, _)| {
                let outcome = i.revision_outcome.filter(|o| o.trained_on(unimproved))?;
                Some(match (outcome.is_revised(), i.final_summary) {
                    (true, Some(revised)) => TrainingPair {
                        conversation: i.conversation,
                        summary: revised,
                        source: "revised",
                    },
                    _ => TrainingPair {
                        conversation: i.conversation,
                        summary: i.teacher_summary,
                        source: "teacher",
                    },
                })
            })
            .collect();
        Ok((pairs, last))
    }
}
