//! The operations the API offers on messages: reads and cancels, logs, the DLQ, and signing
//! keys. Handlers call these with validated domain values.

use crate::Engine;
use crate::error::{EngineError, Result};
use crate::keys::SigningKeys;
use std::collections::{HashMap, HashSet};
use tern_core::{Invalid, Message, MessageId, PublishOptions, sizes};
use tern_store::{CancelSelection, InsertOutcome, LogEntry, MessageFilter, NewMessage, Page, PageRequest};

/// Which DLQ entries an operation applies to.
#[derive(Debug, Clone)]
pub enum DlqSelection {
    /// Exactly these entries.
    Ids(Vec<String>),
    /// One page of entries matching a filter.
    Filter { filter: Box<MessageFilter>, page: PageRequest },
}

impl Engine {
    /// A message of this user; finished ones stay visible for `finished_message_visibility`.
    pub async fn message(&self, user_id: &str, id: &str) -> Result<Message> {
        let not_found = || EngineError::NotFound(format!("message {id} not found"));
        let id: MessageId = id.parse().map_err(|()| not_found())?;
        let message = self.shared.store.get_message(user_id, id).await?.ok_or_else(not_found)?;
        let visible_until =
            message.finished_at.map(|at| at + self.shared.config.finished_message_visibility.as_millis() as i64);
        if visible_until.is_some_and(|until| until < self.shared.clock.now_ms()) {
            return Err(not_found());
        }
        Ok(message)
    }

    /// About how many bytes reading a message of this user takes ([`Engine::message`]), to
    /// reserve first.
    pub async fn message_bytes(&self, user_id: &str, id: &str) -> Result<usize> {
        let not_found = || EngineError::NotFound(format!("message {id} not found"));
        let id: MessageId = id.parse().map_err(|()| not_found())?;
        self.shared.store.message_bytes(user_id, id).await?.ok_or_else(not_found)
    }

    /// Cancels one message; 0 when it had already finished.
    pub async fn cancel(&self, user_id: &str, id: &str) -> Result<u64> {
        let not_found = || EngineError::NotFound(format!("message {id} not found"));
        let id: MessageId = id.parse().map_err(|()| not_found())?;
        let now = self.shared.clock.now_ms();
        let outcome = self.shared.store.cancel_messages(user_id, CancelSelection::Ids(vec![id]), now).await?;
        if outcome.found == 0 {
            return Err(not_found());
        }
        Ok(outcome.cancelled)
    }

    /// Cancels unfinished messages by id (unknown ids are skipped) or by filter.
    pub async fn cancel_many(&self, user_id: &str, selection: CancelSelection) -> Result<u64> {
        let now = self.shared.clock.now_ms();
        Ok(self.shared.store.cancel_messages(user_id, selection, now).await?.cancelled)
    }

    pub async fn logs(&self, user_id: &str, filter: &MessageFilter, page: &PageRequest) -> Result<Page<LogEntry>> {
        Ok(self.shared.store.list_logs(user_id, filter, page).await?)
    }

    pub async fn dlq_list(&self, user_id: &str, filter: &MessageFilter, page: &PageRequest) -> Result<Page<Message>> {
        Ok(self.shared.store.list_dlq(user_id, filter, page).await?)
    }

    /// Removes DLQ entries; returns how many existed, and the cursor of a filtered page.
    pub async fn dlq_delete(&self, user_id: &str, selection: DlqSelection) -> Result<(u64, Option<String>)> {
        let (ids, cursor) = self.select_dlq(user_id, selection).await?;
        let deleted = self.shared.store.delete_dlq(user_id, ids).await?;
        Ok((deleted, cursor))
    }

    /// Publishes every selected entry again as a new message (its stored configuration,
    /// overridden by `overrides`) and removes it from the DLQ, atomically per entry. Explicit
    /// ids must all exist.
    pub async fn dlq_retry(
        &self,
        user_id: &str,
        selection: DlqSelection,
        overrides: &PublishOptions,
    ) -> Result<(Vec<MessageId>, Option<String>)> {
        let explicit = matches!(selection, DlqSelection::Ids(_));
        let (entries, cursor) = self.dlq_entries_without_bodies(user_id, selection).await?;
        let limits = &self.shared.config.limits;
        sizes::check_options(overrides, limits)?;
        let now = self.shared.clock.now_ms();
        let due_at = overrides.first_delivery_at(now, limits)?;
        // Keys the retry names count like a publish's (the entries' own were counted when
        // they were published).
        let mut created = crate::publish::NewResources::default();
        for key in overrides.flow_control_keys() {
            crate::publish::admit_flow_key(&self.shared, user_id, &key, &mut created)?;
        }
        let mut messages = Vec::with_capacity(entries.len());
        for entry in entries {
            // A failed workflow run is taken up by a run of its own (resume, restart); its
            // message alone would go to a run that has ended. A filter skips it.
            if let Some(link) = &entry.spec.workflow {
                if explicit {
                    return Err(Invalid::new(format!(
                        "DLQ entry {} belongs to workflow run {}: resume or restart it (/v2/workflows/dlq/resume, …/restart)",
                        entry.dlq_id.as_deref().unwrap_or_default(),
                        link.run_id
                    ))
                    .into());
                }
                continue;
            }
            let mut spec = entry.spec;
            overrides.override_spec(&mut spec, limits);
            if !self.shared.config.allow_private_destinations
                && let Err(refused) = crate::destinations::check_public_spec(&spec)
            {
                // A named entry is refused; one a filter selected stays in the DLQ, so that the
                // private ones (which delivery refused) never block retrying the rest.
                if explicit {
                    return Err(refused.into());
                }
                continue;
            }
            messages.push(NewMessage {
                id: MessageId::generate(),
                user_id: user_id.to_string(),
                spec,
                // The store copies the entry's body (`consumes_dlq_entry`) without reading it.
                body: bytes::Bytes::new(),
                created_at: now,
                due_at,
                dedup: None,
                consumes_dlq_entry: entry.dlq_id,
                run: None,
                run_limits: None,
            });
        }
        let ids: Vec<MessageId> = messages.iter().map(|message| message.id).collect();
        let outcomes = self.shared.store.insert_messages(messages).await?;
        crate::publish::create_flow_keys(&self.shared, user_id, &created);
        let created = ids
            .into_iter()
            .zip(outcomes)
            .filter(|(_, outcome)| *outcome == InsertOutcome::Created)
            .map(|(id, _)| id)
            .collect();
        Ok((created, cursor))
    }

    /// The selected entries with their configuration but without their bodies (a retry's
    /// messages take those over in the store), in the order of explicit ids, which must all
    /// exist; and the cursor of a filtered page.
    async fn dlq_entries_without_bodies(
        &self,
        user_id: &str,
        selection: DlqSelection,
    ) -> Result<(Vec<Message>, Option<String>)> {
        match selection {
            DlqSelection::Ids(ids) => {
                let filter = MessageFilter { dlq_ids: ids.clone(), ..MessageFilter::default() };
                let page = PageRequest { body_limit: Some(0), ..PageRequest::first(ids.len().max(1)) };
                let found = self.shared.store.list_dlq(user_id, &filter, &page).await?.items;
                // By id, so that matching stays linear in the number of ids.
                let mut found: HashMap<String, Message> =
                    found.into_iter().filter_map(|entry| Some((entry.dlq_id.clone()?, entry))).collect();
                let mut taken = HashSet::new();
                let mut entries = Vec::with_capacity(found.len());
                for dlq_id in &ids {
                    match found.remove(dlq_id) {
                        Some(entry) => {
                            taken.insert(dlq_id.as_str());
                            entries.push(entry);
                        }
                        // An id named twice is retried once.
                        None if taken.contains(dlq_id.as_str()) => {}
                        None => {
                            return Err(EngineError::NotFound(format!("message {dlq_id} not found in the DLQ")));
                        }
                    }
                }
                Ok((entries, None))
            }
            DlqSelection::Filter { filter, page } => {
                let page = PageRequest { body_limit: Some(0), max_bytes: usize::MAX, ..page };
                let page = self.shared.store.list_dlq(user_id, &filter, &page).await?;
                Ok((page.items, page.cursor))
            }
        }
    }

    pub(crate) async fn select_dlq(
        &self,
        user_id: &str,
        selection: DlqSelection,
    ) -> Result<(Vec<String>, Option<String>)> {
        match selection {
            DlqSelection::Ids(ids) => Ok((ids, None)),
            DlqSelection::Filter { filter, page } => {
                // Only the ids are needed: no body is read, so no size ends the page early.
                let page = PageRequest { body_limit: Some(0), max_bytes: usize::MAX, ..page };
                let page = self.shared.store.list_dlq(user_id, &filter, &page).await?;
                let ids = page.items.into_iter().filter_map(|entry| entry.dlq_id).collect();
                Ok((ids, page.cursor))
            }
        }
    }

    pub fn signing_keys(&self, user_id: &str) -> Result<SigningKeys> {
        self.shared.keyring.get(user_id).ok_or_else(|| EngineError::NotFound(format!("user {user_id} not found")))
    }

    pub async fn rotate_signing_keys(&self, user_id: &str) -> Result<SigningKeys> {
        self.shared.keyring.rotate(user_id).await
    }
}
