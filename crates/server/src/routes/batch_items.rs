//! A batch (`POST /v2/batch`) parsed into typed items straight from the request's bytes: a
//! wrong shape fails at its first element, the number of items is bounded while parsing
//! (`limits.max_batch_messages`), and a body written without escapes is not copied — the
//! message's body is a slice of the request's buffer. An item's headers are kept as the slice
//! of the request that holds them, checked as JSON but read into lines only when the item is
//! built (`header_json`), one item at a time: lines take more memory than their JSON (a name
//! repeated for each of its values), and held for every item at once they could take many
//! times the batch's size. So a batch takes about its own size in memory, never a tree of
//! JSON values many times larger.

use crate::error::{ApiError, ApiResult};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::cell::RefCell;

const NOT_A_BATCH: &str = "the batch must be a non-empty JSON array of {destination, headers, body, queue}";

/// What one batch may hold.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Items at most (each creates at least one message).
    pub max_items: usize,
    /// Bytes of each item's body at most.
    pub max_body_bytes: usize,
}

/// One batch item. `body` and `queue` may be absent, `null` or `""` (SDKs differ); other keys
/// (the seed docs show an `api` object) are ignored.
#[derive(Debug)]
pub struct BatchItem {
    pub destination: String,
    /// The JSON text of the item's `headers` (a slice of the request's buffer), unless absent
    /// or `null`.
    pub headers: Option<Bytes>,
    /// A slice of the request's buffer, unless the JSON string had escapes.
    pub body: Bytes,
    pub queue: Option<String>,
}

/// Named as clients know it: serde's messages name the type expected.
#[derive(Deserialize)]
#[serde(rename = "BatchItem")]
struct RawItem<'a> {
    destination: String,
    #[serde(default, borrow)]
    headers: Option<&'a RawValue>,
    /// A string (its text is the body), or any other JSON value (its JSON text is: the workflow
    /// SDK passes a `context.call`'s object body through as it is).
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
    #[serde(default)]
    queue: Option<String>,
}

/// Parses the batch in `raw`; its errors are 400s, except 413 for too many items or a body too
/// large.
pub fn parse(raw: &Bytes, limits: BatchLimits) -> ApiResult<Vec<BatchItem>> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(NOT_A_BATCH));
    }
    let refusal = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let parsed = Items { raw, limits, refusal: &refusal }
        .deserialize(&mut deserializer)
        .and_then(|items| deserializer.end().map(|()| items));
    match parsed {
        Ok(Some(items)) if !items.is_empty() => Ok(items),
        Ok(_) => Err(ApiError::bad_request(NOT_A_BATCH)),
        Err(error) => {
            Err(refusal.take().unwrap_or_else(|| ApiError::bad_request(format!("invalid batch JSON: {error}"))))
        }
    }
}

/// The array of items (or `null`); `refusal` keeps the error that stopped parsing when it is
/// not a 400.
struct Items<'r> {
    raw: &'r Bytes,
    limits: BatchLimits,
    refusal: &'r RefCell<Option<ApiError>>,
}

impl<'de> DeserializeSeed<'de> for Items<'_> {
    type Value = Option<Vec<BatchItem>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = Option<Vec<BatchItem>>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON array of batch items")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let index = items.len();
            let item = match seq.next_element::<RawItem<'de>>() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(error) => return Err(self.refuse(ApiError::bad_request(format!("batch item {index}: {error}")))),
            };
            if index == self.limits.max_items {
                return Err(self.refuse(tern_engine::too_many_batch_messages(self.limits.max_items).into()));
            }
            let body = match item.body.map(body_text) {
                None => Bytes::new(),
                Some(Ok(Cow::Borrowed(text))) => self.raw.slice_ref(text.as_bytes()),
                Some(Ok(Cow::Owned(text))) => Bytes::from(text),
                Some(Err(error)) => {
                    return Err(self.refuse(ApiError::bad_request(format!("batch item {index}: {error}"))));
                }
            };
            if body.len() > self.limits.max_body_bytes {
                let too_large = ApiError::too_large(self.limits.max_body_bytes);
                let message = format!("batch item {index}: {}", too_large.message);
                return Err(self.refuse(ApiError::new(too_large.status, message)));
            }
            let headers = item.headers.map(|headers| self.raw.slice_ref(headers.get().as_bytes()));
            items.push(BatchItem { destination: item.destination, headers, body, queue: item.queue });
        }
        Ok(Some(items))
    }
}

/// The body an item's `body` value stands for: a string's text (borrowed when it has no
/// escapes), `null`'s nothing, any other value's JSON text.
fn body_text(raw: &RawValue) -> Result<Cow<'_, str>, serde_json::Error> {
    let json = raw.get();
    if !json.starts_with('"') {
        return Ok(Cow::Borrowed(if json == "null" { "" } else { json }));
    }
    match serde_json::from_str::<&str>(json) {
        Ok(text) => Ok(Cow::Borrowed(text)),
        Err(_) => serde_json::from_str::<String>(json).map(Cow::Owned),
    }
}

impl Items<'_> {
    fn refuse<E: serde::de::Error>(&self, error: ApiError) -> E {
        let text = error.message.clone();
        *self.refusal.borrow_mut() = Some(error);
        E::custom(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    const LIMITS: BatchLimits = BatchLimits { max_items: 3, max_body_bytes: 8 };

    #[test]
    fn bodies_without_escapes_share_the_request_buffer() {
        let raw = Bytes::from_static(
            br#"[{"destination":"d","body":"plain"},{"destination":"d","body":"a\"b"},{"destination":"d"}]"#,
        );
        let items = parse(&raw, LIMITS).unwrap();
        let range = raw.as_ptr_range();
        assert!(range.contains(&items[0].body.as_ptr()), "a plain body is a slice of the request");
        assert_eq!(items[1].body, Bytes::from_static(b"a\"b"));
        assert!(items[2].body.is_empty());
    }

    #[test]
    fn a_body_that_is_not_a_string_is_its_json_text() {
        let raw = Bytes::from_static(
            br#"[{"destination":"d","body":{"a":1}},{"destination":"d","body":null},{"destination":"d","body":7}]"#,
        );
        let items = parse(&raw, LIMITS).unwrap();
        assert_eq!(items[0].body, Bytes::from_static(br#"{"a":1}"#));
        assert!(items[1].body.is_empty());
        assert_eq!(items[2].body, Bytes::from_static(b"7"));
    }

    #[test]
    fn headers_are_kept_as_their_json_text_in_the_request_buffer() {
        let raw = Bytes::from_static(
            br#"[{"destination":"d","headers":{"a":["1","2"]}},{"destination":"d","headers":null}]"#,
        );
        let items = parse(&raw, LIMITS).unwrap();
        let headers = items[0].headers.as_ref().unwrap();
        assert_eq!(headers.as_ref(), br#"{"a":["1","2"]}"#);
        assert!(raw.as_ptr_range().contains(&headers.as_ptr()), "a slice of the request");
        assert!(items[1].headers.is_none());
        let error = parse(&Bytes::from_static(br#"[{"destination":"d","headers":{"a":]}}]"#), LIMITS).unwrap_err();
        assert!(error.message.starts_with("batch item 0: "), "still JSON: {}", error.message);
    }

    #[test]
    fn a_wrong_shape_or_too_much_is_refused() {
        let parse_text = |text: &'static str| parse(&Bytes::from_static(text.as_bytes()), LIMITS);
        let error = parse_text("[0,0,0,0,0,0,0,0]").unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(error.message.starts_with("batch item 0: invalid type: integer"), "{}", error.message);
        assert_eq!(parse_text("{}").unwrap_err().status, StatusCode::BAD_REQUEST);
        for empty in ["", " ", "null", "[]"] {
            assert_eq!(parse_text(empty).unwrap_err().message, NOT_A_BATCH, "{empty:?}");
        }
        let four = r#"[{"destination":"d"},{"destination":"d"},{"destination":"d"},{"destination":"d"}]"#;
        assert_eq!(parse_text(four).unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE);
        let error = parse_text(r#"[{"destination":"d"},{"destination":"d","body":"123456789"}]"#).unwrap_err();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(error.message.starts_with("batch item 1: "), "{}", error.message);
        assert!(parse_text(r#"[{"destination":"d"}] x"#).is_err(), "trailing characters");
    }
}
