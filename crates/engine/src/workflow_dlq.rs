//! The workflow DLQ (workflow-protocol.md §4.10): a failed run's DLQ entry is its message that
//! failed; resuming it starts a new run that goes on from that message, restarting it starts a
//! new run from the initial payload, and the failure function can be called again.

use crate::Engine;
use crate::error::{EngineError, Result};
use crate::operations::DlqSelection;
use crate::publish::{NewResources, PublishRequest, Recipients, create_flow_keys, prepare};
use crate::trigger::Triggered;
use bytes::Bytes;
use tern_core::PublishOptions;
use tern_core::ids::new_run_id;
use tern_core::workflow::{CallType, RUN_ID_HEADER, SDK_VERSION_HEADER};
use tern_store::{Continuation, FailedRun, InsertOutcome};

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
            let failed_callback = failed
                .failed_spec
                .as_ref()
                .filter(|spec| spec.workflow.as_ref().is_some_and(|link| link.call_type == CallType::FromCallback));
            match failed_callback {
                // Resumed at a call's callback: it is delivered again as it was (its body, the
                // headers that tell the SDK which call it answers), continuing the new run.
                Some(spec) if resume => {
                    headers.push("Upstash-Workflow-CallType", CallType::FromCallback.as_str());
                    for (name, value) in spec.headers.iter() {
                        headers.push(format!("Upstash-Forward-{name}"), value);
                    }
                }
                _ => headers.push(format!("Upstash-Forward-{SDK_VERSION_HEADER}"), "1"),
            }
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
    /// failure callback is published anew, in that run.
    pub async fn retry_failure_function(&self, user_id: &str, dlq_id: &str) -> Result<Triggered> {
        let now = self.shared.clock.now_ms();
        let called = self.shared.store.call_failure_function_again(user_id, dlq_id, now).await?;
        let (run_id, created_at) = called.ok_or_else(|| {
            EngineError::NotFound(format!("no failure callback of a workflow run in DLQ entry {dlq_id}"))
        })?;
        Ok(Triggered { run_id, created_at, deduplicated: false })
    }
}
