//! Identifiers: `msg_…` message ids (time-ordered ULIDs), `<unix-ms>-<random>` DLQ ids, `jwt_…`
//! token ids. Clients treat all of them as opaque strings.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use ulid::Ulid;

/// A message id: `msg_` followed by a ULID, so ids sort roughly by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Ulid);

impl MessageId {
    pub fn generate() -> Self {
        MessageId(Ulid::new())
    }

    pub fn as_u128(self) -> u128 {
        self.0.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "msg_{}", self.0)
    }
}

impl FromStr for MessageId {
    type Err = ();

    /// Accepts exactly the shape tern generates; anything else cannot name a message.
    fn from_str(text: &str) -> Result<Self, ()> {
        let ulid = text.strip_prefix("msg_").ok_or(())?;
        Ulid::from_string(ulid).map(MessageId).map_err(|_| ())
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|()| serde::de::Error::custom(format!("invalid message id {text:?}")))
    }
}

/// A DLQ id in the Redis-stream-like shape QStash uses (`1725323658779-0`): the time, then 48
/// random bits rather than a process's counter, so that ids stay unique across restarts and
/// across nodes sharing one database.
pub fn new_dlq_id(now_ms: i64) -> String {
    format!("{now_ms}-{}", Ulid::new().random() & 0xFFFF_FFFF_FFFF)
}

/// A workflow run id for a run the server starts without one given: `wfr_` and a ULID, as the
/// SDKs make theirs (`wfr_` and random characters).
pub fn new_run_id() -> String {
    format!("wfr_{}", Ulid::new().to_string().to_lowercase())
}

/// A unique JWT id.
pub fn new_jwt_id() -> String {
    format!("jwt_{}", Ulid::new())
}

/// A fresh signing key: `sig_` plus 28 random base58 characters, like the dev keys.
pub fn new_signing_key() -> String {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let suffix: String = (0..28).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect();
    format!("sig_{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_round_trip() {
        let id = MessageId::generate();
        let text = id.to_string();
        assert!(text.starts_with("msg_"));
        assert_eq!(text.parse::<MessageId>(), Ok(id));
        assert!("msg_nope".parse::<MessageId>().is_err());
        assert!(id.to_string()[4..].parse::<MessageId>().is_err());
    }

    #[test]
    fn dlq_ids_are_unique() {
        assert_ne!(new_dlq_id(5), new_dlq_id(5));
        assert!(new_dlq_id(1725323658779).starts_with("1725323658779-"));
    }

    #[test]
    fn signing_keys_look_like_the_dev_keys() {
        let key = new_signing_key();
        assert_eq!(key.len(), 32);
        assert!(key.starts_with("sig_"));
    }
}
