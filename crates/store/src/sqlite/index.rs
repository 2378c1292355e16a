//! The in-memory index of unfinished messages by due time, and the set of claimed messages.
//!
//! It mirrors committed state only: the writer changes it after a commit (or, for cancels,
//! tentatively before it, undoing on failure). It holds 24 bytes of key per pending message;
//! messages due soon are also cached whole, within a byte budget, so that claiming them needs
//! no read.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tern_core::{Message, MessageId};

/// Messages due within this horizon of their insertion are kept in the cache.
pub const CACHE_HORIZON_MS: i64 = 5_000;

#[derive(Debug)]
pub struct DueIndex {
    due: BTreeSet<(i64, MessageId)>,
    cache: HashMap<MessageId, Arc<Message>>,
    cache_bytes: usize,
    cache_budget: usize,
    claimed: HashSet<MessageId>,
}

/// What a claim took from the index: cached messages and ids still to be read.
#[derive(Debug, Default)]
pub struct Claimed {
    pub cached: Vec<Arc<Message>>,
    pub to_load: Vec<MessageId>,
}

impl DueIndex {
    pub fn new(cache_budget: usize) -> Self {
        DueIndex { due: BTreeSet::new(), cache: HashMap::new(), cache_bytes: 0, cache_budget, claimed: HashSet::new() }
    }

    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Adds a message due at `due_at`; `message` is cached when due soon and the budget allows.
    pub fn insert(&mut self, due_at: i64, id: MessageId, message: Option<Arc<Message>>, now: i64) {
        self.due.insert((due_at, id));
        if let Some(message) = message {
            let size = message.body.len() + 512;
            if due_at <= now + CACHE_HORIZON_MS && self.cache_bytes + size <= self.cache_budget {
                self.cache_bytes += size;
                if let Some(previous) = self.cache.insert(id, message) {
                    self.cache_bytes -= previous.body.len() + 512;
                }
            }
        }
    }

    /// Removes a message that is no longer due (cancelled). Returns whether it was indexed.
    pub fn remove(&mut self, due_at: i64, id: MessageId) -> bool {
        self.uncache(id);
        self.due.remove(&(due_at, id))
    }

    fn uncache(&mut self, id: MessageId) -> Option<Arc<Message>> {
        let message = self.cache.remove(&id)?;
        self.cache_bytes -= message.body.len() + 512;
        Some(message)
    }

    pub fn is_claimed(&self, id: MessageId) -> bool {
        self.claimed.contains(&id)
    }

    /// Takes up to `limit` entries due at `now`, earliest first, and marks them claimed.
    pub fn claim(&mut self, now: i64, limit: usize) -> Claimed {
        let mut claimed = Claimed::default();
        while claimed.cached.len() + claimed.to_load.len() < limit {
            let Some(&(due_at, id)) = self.due.first() else {
                break;
            };
            if due_at > now {
                break;
            }
            self.due.pop_first();
            self.claimed.insert(id);
            match self.uncache(id) {
                Some(message) => claimed.cached.push(message),
                None => claimed.to_load.push(id),
            }
        }
        claimed
    }

    /// Ends a claim (the attempt's outcome is committed, or the message vanished).
    pub fn release(&mut self, id: MessageId) {
        self.claimed.remove(&id);
    }

    pub fn next_due_at(&self) -> Option<i64> {
        self.due.first().map(|(due_at, _)| *due_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_in_due_order_and_tracks_claims() {
        let mut index = DueIndex::new(1 << 20);
        let (a, b, c) = (MessageId::generate(), MessageId::generate(), MessageId::generate());
        index.insert(30, a, None, 0);
        index.insert(10, b, None, 0);
        index.insert(20, c, None, 0);
        assert_eq!(index.next_due_at(), Some(10));
        let claimed = index.claim(25, 10);
        assert_eq!(claimed.to_load, vec![b, c]);
        assert!(index.is_claimed(b) && !index.is_claimed(a));
        assert!(!index.remove(10, b));
        index.release(b);
        assert!(!index.is_claimed(b));
        assert!(index.remove(30, a));
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn cache_respects_horizon_and_budget() {
        let message = |id| {
            Arc::new(Message {
                id,
                user_id: "u".into(),
                spec: tern_core::PublishOptions::default().to_spec("http://x/".into(), None, &Default::default()),
                body: vec![0u8; 100].into(),
                created_at: 0,
                not_before: 0,
                state: tern_core::MessageState::Pending,
                retried: 0,
                due_at: Some(0),
                finished_at: None,
                dlq_id: None,
                last_response: None,
            })
        };
        let mut index = DueIndex::new(1000);
        let (soon, late, over) = (MessageId::generate(), MessageId::generate(), MessageId::generate());
        index.insert(0, soon, Some(message(soon)), 0);
        index.insert(CACHE_HORIZON_MS + 1, late, Some(message(late)), 0);
        index.insert(1, over, Some(message(over)), 0);
        let claimed = index.claim(i64::MAX, 10);
        assert_eq!(claimed.cached.len(), 1);
        assert_eq!(claimed.to_load, vec![over, late]);
    }
}
