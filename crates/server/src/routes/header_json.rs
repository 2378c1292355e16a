//! Header lines given as a JSON object, `{name: value or [values]}` (a batch item's headers, a
//! URL group's defaults), read straight into lines: no generic tree of JSON values is built
//! first (serde's untagged enums buffer every value that way, many times its size), and the
//! lines are counted as they are read, so that reading stops (400) once their names and values
//! pass `max_header_bytes` instead of holding whatever a request expands into. Every line
//! counts its name: a name with a thousand values is a thousand lines.

use crate::error::{ApiError, ApiResult};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::collections::BTreeMap;
use tern_core::HeaderList;

/// The header lines of the JSON object in `raw`, at most `max_bytes` of names and values. As
/// when the object was read into a map: names in sorted order, a name given twice keeps its
/// last values, a name with no values gives no line.
pub fn parse(raw: &[u8], max_bytes: usize) -> ApiResult<HeaderList> {
    let refusal = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let parsed = Lines { max_bytes, refusal: &refusal }
        .deserialize(&mut deserializer)
        .and_then(|lines| deserializer.end().map(|()| lines));
    let map = parsed.map_err(|error| {
        refusal.take().unwrap_or_else(|| ApiError::bad_request(format!("invalid headers: {error}")))
    })?;
    let mut lines = HeaderList::new();
    for (name, values) in map {
        lines.0.extend(values.into_iter().map(|value| (name.clone(), value)));
    }
    Ok(lines)
}

/// The object, as a map of name → values; `refusal` keeps an error that should read as it is
/// (serde's errors get the position appended).
struct Lines<'r> {
    max_bytes: usize,
    refusal: &'r RefCell<Option<ApiError>>,
}

impl<'de> DeserializeSeed<'de> for Lines<'_> {
    type Value = BTreeMap<String, Vec<String>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Lines<'_> {
    type Value = BTreeMap<String, Vec<String>>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an object of header names to a string or an array of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = BTreeMap::new();
        let mut used = 0;
        while let Some(name) = access.next_key::<String>()? {
            // A line counts at least its name, so lines are bounded in number too.
            if name.is_empty() {
                return Err(self.refuse(ApiError::bad_request("a header name must not be empty")));
            }
            let values = access.next_value_seed(Values { name_bytes: name.len(), used: &mut used, lines: &self })?;
            if values.is_empty() {
                map.remove(&name);
            } else {
                map.insert(name, values);
            }
        }
        Ok(map)
    }
}

impl Lines<'_> {
    fn refuse<E: serde::de::Error>(&self, error: ApiError) -> E {
        let text = error.message.clone();
        *self.refusal.borrow_mut() = Some(error);
        E::custom(text)
    }

    /// Counts one line of `name_bytes` and `value`; refuses once the lines pass the bound.
    fn count<E: serde::de::Error>(&self, used: &mut usize, name_bytes: usize, value: &str) -> Result<(), E> {
        *used = used.saturating_add(name_bytes + value.len());
        if *used > self.max_bytes {
            let max = self.max_bytes;
            let message =
                format!("the headers take more than {max} bytes (names and values); at most {max} bytes are allowed");
            return Err(self.refuse(ApiError::bad_request(message)));
        }
        Ok(())
    }
}

/// The values of one name: a string (one line) or an array of strings (a line each).
struct Values<'u, 'l, 'r> {
    name_bytes: usize,
    used: &'u mut usize,
    lines: &'l Lines<'r>,
}

impl<'de> DeserializeSeed<'de> for Values<'_, '_, '_> {
    type Value = Vec<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Values<'_, '_, '_> {
    type Value = Vec<String>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a header value: a string or an array of strings")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
        self.lines.count(self.used, self.name_bytes, value)?;
        Ok(vec![value.to_string()])
    }

    fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Self::Value, E> {
        self.lines.count(self.used, self.name_bytes, &value)?;
        Ok(vec![value])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut values = Vec::new();
        while let Some(value) = seq.next_element::<String>()? {
            self.lines.count(self.used, self.name_bytes, &value)?;
            values.push(value);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn lines(raw: &str, max_bytes: usize) -> ApiResult<Vec<(String, String)>> {
        parse(raw.as_bytes(), max_bytes).map(|lines| lines.0)
    }

    #[test]
    fn strings_and_arrays_of_strings_become_lines_in_name_order() {
        let parsed = lines(r#"{"b": ["1", "2"], "a": "x", "c": [], "a": "y"}"#, 100).unwrap();
        let expected = [("a", "y"), ("b", "1"), ("b", "2")].map(|(n, v)| (n.to_string(), v.to_string()));
        assert_eq!(parsed, expected);
        assert_eq!(lines("{}", 0).unwrap(), []);
    }

    #[test]
    fn a_wrong_shape_is_refused() {
        for wrong in [r#"{"a": 1}"#, r#"{"a": [1]}"#, r#"{"a": {"b": "c"}}"#, r#"{"a": null}"#, "[]", r#""a""#] {
            let error = lines(wrong, 100).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{wrong}");
            assert!(error.message.starts_with("invalid headers: "), "{wrong}: {}", error.message);
        }
        assert_eq!(lines(r#"{"": "x"}"#, 100).unwrap_err().message, "a header name must not be empty");
        assert!(lines(r#"{"a": "x"} {}"#, 100).is_err(), "trailing characters");
    }

    #[test]
    fn lines_are_counted_as_they_are_read() {
        // Four lines of "ab" + one byte: 12 bytes.
        let four = r#"{"ab": ["1", "2", "3"], "x": "yz"}"#;
        assert_eq!(lines(four, 12).unwrap().len(), 4);
        let error = lines(four, 11).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            error.message,
            "the headers take more than 11 bytes (names and values); at most 11 bytes are allowed"
        );
        // A name with many empty values counts the name for each of them.
        let many = format!(r#"{{"a": [{}""]}}"#, r#""","#.repeat(1000));
        assert!(lines(&many, 1000).is_err());
        assert_eq!(lines(&many, 1001).unwrap().len(), 1001);
    }
}
