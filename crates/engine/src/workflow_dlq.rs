//! The workflow DLQ (workflow-protocol.md §4.10): a failed run's DLQ entry is its message that
//! failed; resuming it starts a new run that goes on from that message, restarting it starts a
//! new run from the initial payload, and the failure function can be called again.

use crate::Engine;
use crate::error::{EngineError, Result};
use crate::operations::DlqSelection;
use crate::trigger::Triggered;
use tern_core::ids::new_run_id;
use tern_core::workflow::{CallType, RUN_ID_HEADER, WorkflowLink};
use tern_core::{MessageId, PublishOptions};
use tern_store::{Continuation, FailedRun, InsertOutcome, NewMessage, NewRun};

impl Engine {
    /// The run that failed with DLQ entry `dlq_id`, if it was a workflow run's.
    pub async fn failed_run(&self, user_id: &str, dlq_id: &str) -> Result<Option<FailedRun>> {
        Ok(self.shared.store.failed_run(user_id, dlq_id, false).await?)
    }

    /// Starts a new run for each selected entry of a failed run — from its failed message
    /// (`resume`) or from the beginning — with the run's configuration, overridden by
    /// `overrides`; each entry leaves the DLQ in the commit that starts its run. Entries that
    /// are not workflow runs' are left alone.
    pub async fn take_up_failed_runs(
        &self,
        user_id: &str,
        selection: DlqSelection,
        overrides: &PublishOptions,
        resume: bool,
    ) -> Result<(Vec<Triggered>, Option<String>)> {
        let explicit = matches!(selection, DlqSelection::Ids(_));
        let (ids, cursor) = self.select_dlq(user_id, selection).await?;
        let now = self.shared.clock.now_ms();
        let limits = &self.shared.config.limits;
        let mut messages = Vec::with_capacity(ids.len());
        for dlq_id in ids {
            let store = &self.shared.store;
            let (Some(failed), Some(message)) =
                (store.failed_run(user_id, &dlq_id, !resume).await?, store.get_dlq(user_id, &dlq_id).await?)
            else {
                if explicit {
                    return Err(EngineError::NotFound(format!("workflow run of DLQ entry {dlq_id} not found")));
                }
                continue;
            };
            let Some(link) = message.spec.workflow.clone() else { continue };
            let run_id = new_run_id();
            let mut spec = message.spec.clone();
            let call_type = if resume { link.call_type } else { CallType::Step };
            spec.workflow = Some(WorkflowLink { run_id: run_id.clone(), call_type, init: true });
            spec.passthrough.remove(RUN_ID_HEADER);
            spec.passthrough.push(RUN_ID_HEADER, run_id.clone());
            overrides.override_spec(&mut spec, limits);
            let mut config = failed.run.config.clone();
            config.override_with(overrides);
            let body = if resume { message.body.clone() } else { failed.initial.clone().unwrap_or_default() };
            messages.push(NewMessage {
                id: MessageId::generate(),
                user_id: user_id.to_string(),
                spec,
                body,
                created_at: now,
                due_at: now,
                dedup: None,
                consumes_dlq_entry: None,
                run: Some(NewRun {
                    run_id,
                    url: failed.run.url.clone(),
                    config,
                    invoker: None,
                    replace: false,
                    continues: Some(Continuation { dlq_id, resume }),
                }),
            });
        }
        let run_ids: Vec<String> =
            messages.iter().filter_map(|m| m.run.as_ref().map(|run| run.run_id.clone())).collect();
        let outcomes = self.shared.store.insert_messages(messages).await?;
        let started = outcomes
            .into_iter()
            .zip(run_ids)
            .filter(|(outcome, _)| *outcome == InsertOutcome::Created)
            .map(|(_, run_id)| Triggered { run_id, created_at: now, deduplicated: false })
            .collect();
        Ok((started, cursor))
    }

    /// Calls the failure function of the run that failed with DLQ entry `dlq_id` again: its
    /// failure callback is published anew.
    pub async fn retry_failure_function(&self, user_id: &str, dlq_id: &str) -> Result<Triggered> {
        let store = &self.shared.store;
        let failed = store.failed_run(user_id, dlq_id, false).await?;
        let not_found = || EngineError::NotFound(format!("workflow run of DLQ entry {dlq_id} not found"));
        let failed = failed.ok_or_else(not_found)?;
        let no_callback = || EngineError::NotFound(format!("the run of DLQ entry {dlq_id} has no failure callback"));
        let callback = failed.failure_callback.as_ref().ok_or_else(no_callback)?;
        let callback = store.get_message(user_id, callback.message_id).await?.ok_or_else(no_callback)?;
        let now = self.shared.clock.now_ms();
        let message = NewMessage {
            id: MessageId::generate(),
            user_id: user_id.to_string(),
            spec: callback.spec,
            body: callback.body,
            created_at: now,
            due_at: now,
            dedup: None,
            consumes_dlq_entry: None,
            run: None,
        };
        store.insert_messages(vec![message]).await?;
        Ok(Triggered { run_id: failed.run.run_id, created_at: failed.run.created_at, deduplicated: false })
    }
}
