//! The workflow DLQ (workflow-protocol.md §4.10): a failed run's DLQ entry is its message that
//! failed; resuming it starts a new run that goes on from that message, restarting it starts a
//! new run from the initial payload, and the failure function can be called again.

use crate::Engine;
use crate::error::{EngineError, Result};
use crate::operations::DlqSelection;
use crate::publish::{NewResources, PublishRequest, Recipients, create_flow_keys, prepare};
use crate::trigger::Triggered;
use bytes::Bytes;
use tern_core::ids::new_run_id;
use tern_core::workflow::{RUN_ID_HEADER, SDK_VERSION_HEADER};
use tern_core::{MessageId, PublishOptions};
use tern_store::{Continuation, FailedRun, InsertOutcome, NewMessage};

impl Engine {
    /// The run that failed with DLQ entry `dlq_id`, if it was a workflow run's.
    pub async fn failed_run(&self, user_id: &str, dlq_id: &str) -> Result<Option<FailedRun>> {
        Ok(self.shared.store.failed_run(user_id, dlq_id).await?)
    }

    /// Starts a new run for each selected entry of a failed run — from its failed message
    /// (`resume`) or from the beginning — with the run's configuration, overridden by
    /// `overrides`; each entry leaves the DLQ in the commit that starts its run. Entries that
    /// are not workflow runs' are left alone. The new runs' Inits are published like a trigger's
    /// (the same checks and limits); the store copies their bodies from the failed run's
    /// records, never read here.
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
        let mut created = NewResources::default();
        let mut messages = Vec::with_capacity(ids.len());
        for dlq_id in ids {
            let not_found = || EngineError::NotFound(format!("workflow run of DLQ entry {dlq_id} not found"));
            let Some(failed) = self.shared.store.failed_run(user_id, &dlq_id).await?.filter(|f| f.in_dlq) else {
                if explicit {
                    return Err(not_found());
                }
                continue;
            };
            let run_id = new_run_id();
            let mut config = failed.run.config.for_run(&run_id);
            config.override_with(overrides);
            let mut headers = config.header_lines();
            headers.push(RUN_ID_HEADER, run_id.clone());
            headers.push("Upstash-Workflow-Init", "true");
            headers.push("Upstash-Workflow-Url", failed.run.url.clone());
            if let Some(features) =
                failed.failed_spec.as_ref().and_then(|spec| spec.passthrough.get("Upstash-Feature-Set"))
            {
                headers.push("Upstash-Feature-Set", features);
            }
            headers.push(format!("Upstash-Forward-{SDK_VERSION_HEADER}"), "1");
            let destination = tern_core::destination::checked_url(&failed.run.url, "workflow")?;
            let caller_ip = failed.run.caller_ip.clone();
            let request = PublishRequest::from_headers(
                Recipients::Url(destination),
                headers,
                true,
                Bytes::new(),
                caller_ip,
                None,
            )?;
            let (_, mut prepared) = prepare(&self.shared, user_id, request, now, &mut created).await?;
            let Some(mut message) = prepared.pop() else { continue };
            let Some(run) = message.run.as_mut() else { continue };
            run.continues = Some(Continuation { dlq_id, resume });
            messages.push(message);
        }
        let run_ids: Vec<String> =
            messages.iter().filter_map(|m| m.run.as_ref().map(|run| run.run_id.clone())).collect();
        let outcomes = self.shared.store.insert_messages(messages).await?;
        create_flow_keys(&self.shared, user_id, &created);
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
        // Only while the entry is in the DLQ (a resume or restart takes it out).
        let failed = store.failed_run(user_id, dlq_id).await?.filter(|failed| failed.in_dlq);
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
            run_limits: None,
        };
        store.insert_messages(vec![message]).await?;
        Ok(Triggered { run_id: failed.run.run_id, created_at: failed.run.created_at, deduplicated: false })
    }
}
