//! Deduplication keys (spec §16). Keys are scoped to the concrete destination URL so that each
//! endpoint of a URL group is deduplicated on its own; the store scopes them per user.

use crate::headers::HeaderList;
use sha2::{Digest, Sha256};

/// The key of an explicit `Upstash-Deduplication-Id`.
pub fn explicit_key(deduplication_id: &str, url: &str) -> String {
    hex(Sha256::new().chain_update(b"id\0").chain_update(deduplication_id).chain_update(b"\0").chain_update(url))
}

/// The key of `Upstash-Content-Based-Deduplication`: destination, forwarded headers (sorted by
/// lower-cased name) and body.
pub fn content_key(destination: &str, url: &str, headers: &HeaderList, body: &[u8]) -> String {
    let mut sorted: Vec<(String, &str)> =
        headers.iter().map(|(name, value)| (name.to_ascii_lowercase(), value)).collect();
    sorted.sort();
    let mut hasher =
        Sha256::new().chain_update(b"content\0").chain_update(destination).chain_update(b"\0").chain_update(url);
    for (name, value) in sorted {
        hasher.update(b"\0");
        hasher.update(name);
        hasher.update(b":");
        hasher.update(value);
    }
    hasher.update(b"\0");
    hasher.update(body);
    hex(hasher)
}

fn hex(hasher: Sha256) -> String {
    hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_what_differs_and_ignore_header_order() {
        assert_eq!(explicit_key("a", "http://x/"), explicit_key("a", "http://x/"));
        assert_ne!(explicit_key("a", "http://x/"), explicit_key("a", "http://y/"));
        let mut one = HeaderList::new();
        one.push("A", "1");
        one.push("b", "2");
        let mut two = HeaderList::new();
        two.push("B", "2");
        two.push("a", "1");
        assert_eq!(content_key("d", "u", &one, b"x"), content_key("d", "u", &two, b"x"));
        assert_ne!(content_key("d", "u", &one, b"x"), content_key("d", "u", &one, b"y"));
        assert_ne!(content_key("d", "u", &one, b"x"), explicit_key("d", "u"));
    }
}
