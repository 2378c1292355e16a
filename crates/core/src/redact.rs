//! `Upstash-Redact-Fields` (spec §23): which parts of a message API responses hide. Delivery
//! always uses the original values; reads show `REDACTED:<sha256 hex>` instead.

use crate::error::{Invalid, Result};
use crate::headers::HeaderList;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What `Debug` output shows in place of a secret (a token or a signing key), so that no log
/// or panic message carries one.
pub const SECRET: &str = "<secret>";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_headers: bool,
    /// Names of single redacted headers (compared case-insensitively).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
}

impl Redaction {
    /// Parses `body`, `header`/`headers` and `header[Name]`/`headers[Name]`, comma-separated.
    pub fn parse(value: &str) -> Result<Self> {
        let mut redaction = Redaction::default();
        for item in value.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let lower = item.to_ascii_lowercase();
            if lower == "body" {
                redaction.body = true;
            } else if lower == "header" || lower == "headers" {
                redaction.all_headers = true;
            } else if let Some(name) = ["header[", "headers["]
                .iter()
                .find_map(|prefix| lower.starts_with(prefix).then(|| &item[prefix.len()..]))
                .and_then(|rest| rest.strip_suffix(']'))
                .filter(|name| !name.trim().is_empty())
            {
                redaction.headers.push(name.trim().to_string());
            } else {
                return Err(Invalid::new(format!(
                    "invalid Upstash-Redact-Fields item {item:?}: expected body, header or header[Name]"
                )));
            }
        }
        Ok(redaction)
    }

    pub fn is_empty(&self) -> bool {
        !self.body && !self.all_headers && self.headers.is_empty()
    }

    /// The body as API responses show it.
    pub fn body(&self, body: &[u8]) -> Vec<u8> {
        if self.body { redacted(body).into_bytes() } else { body.to_vec() }
    }

    /// The headers as API responses show them.
    pub fn headers(&self, headers: &HeaderList) -> HeaderList {
        headers
            .iter()
            .map(|(name, value)| {
                let hidden =
                    self.all_headers || self.headers.iter().any(|redacted| redacted.eq_ignore_ascii_case(name));
                let value = if hidden { redacted(value.as_bytes()) } else { value.to_string() };
                (name.to_string(), value)
            })
            .collect()
    }
}

/// `REDACTED:` followed by the hex SHA-256 of the hidden value.
pub fn redacted(value: &[u8]) -> String {
    let digest = Sha256::digest(value);
    let mut text = String::with_capacity(9 + 64);
    text.push_str("REDACTED:");
    for byte in digest {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        let redaction = Redaction::parse("body, header[Authorization],headers[X-Key]").unwrap();
        assert!(redaction.body);
        assert!(!redaction.all_headers);
        assert_eq!(redaction.headers, vec!["Authorization", "X-Key"]);
        assert!(Redaction::parse("headers").unwrap().all_headers);
        assert!(Redaction::parse("header").unwrap().all_headers);
        assert!(Redaction::parse("bodies").is_err());
        assert!(Redaction::parse("header[]").is_err());
    }

    #[test]
    fn hides_values_behind_their_hash() {
        let redaction = Redaction::parse("body,header[authorization]").unwrap();
        assert_eq!(
            String::from_utf8(redaction.body(b"secret")).unwrap(),
            "REDACTED:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        let mut headers = HeaderList::new();
        headers.push("Authorization", "Bearer x");
        headers.push("Content-Type", "text/plain");
        let shown = redaction.headers(&headers);
        assert!(shown.get("authorization").unwrap().starts_with("REDACTED:"));
        assert_eq!(shown.get("content-type"), Some("text/plain"));
    }
}
