//! Header lists as tern stores them: the received name and value of each header line, in
//! order, never split on commas (spec §0.2), shown to API clients under Go-canonical names.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// An ordered list of `(name, value)` header lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderList(pub Vec<(String, String)>);

impl HeaderList {
    pub fn new() -> Self {
        HeaderList(Vec::new())
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The first value of `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(candidate, _)| candidate.eq_ignore_ascii_case(name)).map(|(_, value)| value)
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(candidate, _)| !candidate.eq_ignore_ascii_case(name));
    }

    /// Adds each line of `defaults` whose name no line here has (compared case-insensitively):
    /// a URL group's default headers under a request's own. The names here are gathered once,
    /// so that many lines on both sides (a batch item's and its group's) stay linear.
    pub fn add_defaults(&mut self, defaults: &HeaderList) {
        if defaults.is_empty() {
            return;
        }
        let own: HashSet<String> = self.0.iter().map(|(name, _)| name.to_ascii_lowercase()).collect();
        let missing: Vec<(String, String)> =
            defaults.0.iter().filter(|(name, _)| !own.contains(&name.to_ascii_lowercase())).cloned().collect();
        self.0.extend(missing);
    }

    /// The map shape of API responses: canonical name → values in received order.
    pub fn to_canonical_map(&self) -> BTreeMap<String, Vec<String>> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in self.iter() {
            map.entry(canonical_name(name)).or_default().push(value.to_string());
        }
        map
    }
}

impl FromIterator<(String, String)> for HeaderList {
    fn from_iter<T: IntoIterator<Item = (String, String)>>(iter: T) -> Self {
        HeaderList(iter.into_iter().collect())
    }
}

/// Go's `CanonicalMIMEHeaderKey`: the first letter and every letter after a `-` upper-case,
/// the rest lower-case (`bypass-tunnel-reminder` → `Bypass-Tunnel-Reminder`).
pub fn canonical_name(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let mapped = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            mapped
        })
        .collect()
}

/// Strips `prefix` from `name` when it starts with it, ignoring ASCII case.
pub fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &name[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_follow_go() {
        assert_eq!(canonical_name("test-header"), "Test-Header");
        assert_eq!(canonical_name("CONTENT-TYPE"), "Content-Type");
        assert_eq!(canonical_name("x-a--b"), "X-A--B");
        assert_eq!(canonical_name("bypass-tunnel-reminder"), "Bypass-Tunnel-Reminder");
    }

    #[test]
    fn map_keeps_each_line_as_one_value() {
        let mut list = HeaderList::new();
        list.push("test-case", "value-uppercase, value-lowercase");
        list.push("Test-Case", "second");
        let map = list.to_canonical_map();
        assert_eq!(map["Test-Case"], vec!["value-uppercase, value-lowercase", "second"]);
    }

    #[test]
    fn defaults_fill_in_only_names_not_given() {
        let mut own = HeaderList(vec![("x-a".into(), "own".into())]);
        let defaults =
            HeaderList(vec![("X-A".into(), "d".into()), ("X-B".into(), "1".into()), ("x-b".into(), "2".into())]);
        own.add_defaults(&defaults);
        assert_eq!(own.0, [("x-a", "own"), ("X-B", "1"), ("x-b", "2")].map(|(n, v)| (n.to_string(), v.to_string())));
    }

    #[test]
    fn prefix_stripping_ignores_case() {
        assert_eq!(strip_prefix_ignore_case("upstash-forward-X-A", "Upstash-Forward-"), Some("X-A"));
        assert_eq!(strip_prefix_ignore_case("Upstash-Fo", "Upstash-Forward-"), None);
        assert_eq!(strip_prefix_ignore_case("Üpstash-Forward-a", "Upstash-Forward-"), None);
    }
}
