//! Per-user signing keys (spec §5.11, §8). Configuration supplies each user's current and next
//! key; a rotation (`current := next`, `next := new`) is stored and survives restarts until the
//! configured pair changes, at which point configuration wins again.

use crate::error::{EngineError, Result};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tern_core::ids::new_signing_key;
use tern_core::redact::SECRET;
use tern_store::{Store, StoredKeys};

#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeys {
    pub current: String,
    pub next: String,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys").field("current", &SECRET).field("next", &SECRET).finish()
    }
}

/// A user as the engine knows it: an id and the configured key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKeys {
    pub user_id: String,
    pub keys: SigningKeys,
}

pub struct Keyring {
    store: Arc<dyn Store>,
    configured: HashMap<String, SigningKeys>,
    active: RwLock<HashMap<String, SigningKeys>>,
    rotation: tokio::sync::Mutex<()>,
}

impl Keyring {
    pub async fn load(store: Arc<dyn Store>, users: &[UserKeys]) -> Result<Self> {
        let mut active = HashMap::new();
        let mut configured = HashMap::new();
        for user in users {
            let stored = store.load_keys(&user.user_id).await?;
            let keys = match stored {
                Some(stored)
                    if stored.configured_current == user.keys.current && stored.configured_next == user.keys.next =>
                {
                    SigningKeys { current: stored.current, next: stored.next }
                }
                _ => user.keys.clone(),
            };
            active.insert(user.user_id.clone(), keys);
            configured.insert(user.user_id.clone(), user.keys.clone());
        }
        Ok(Keyring { store, configured, active: RwLock::new(active), rotation: tokio::sync::Mutex::new(()) })
    }

    pub fn get(&self, user_id: &str) -> Option<SigningKeys> {
        self.active.read().expect("keyring lock").get(user_id).cloned()
    }

    /// Rotates a user's keys durably and returns the new pair.
    pub async fn rotate(&self, user_id: &str) -> Result<SigningKeys> {
        let _one_at_a_time = self.rotation.lock().await;
        let (Some(old), Some(configured)) = (self.get(user_id), self.configured.get(user_id)) else {
            return Err(EngineError::NotFound(format!("user {user_id} not found")));
        };
        let rotated = SigningKeys { current: old.next, next: new_signing_key() };
        let stored = StoredKeys {
            current: rotated.current.clone(),
            next: rotated.next.clone(),
            configured_current: configured.current.clone(),
            configured_next: configured.next.clone(),
        };
        self.store.save_keys(user_id, stored).await?;
        self.active.write().expect("keyring lock").insert(user_id.to_string(), rotated.clone());
        Ok(rotated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_keys() {
        let keys = SigningKeys { current: "sig_currentSecret".into(), next: "sig_nextSecret".into() };
        let user = UserKeys { user_id: "acme".into(), keys };
        let printed = format!("{user:?} {user:#?}");
        assert!(printed.contains("acme"), "{printed}");
        assert!(!printed.contains("Secret"), "{printed}");
    }
}
