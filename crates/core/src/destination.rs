//! The destination embedded in a publish path (spec §3.1, §3.2): a URL with the request's query
//! string re-attached (minus QStash's own parameters), a URL-group name or an `api/` name.

use crate::error::{Invalid, Result};
use crate::headers::strip_prefix_ignore_case;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Url(String),
    UrlGroup(String),
    Api(String),
}

/// A parsed publish target: the destination and the `upstash-*` options given as query keys
/// (webhook mode), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub destination: Destination,
    pub query_options: Vec<(String, String)>,
}

/// Parses the raw (undecoded) path after the fixed prefix and the raw query string.
pub fn parse_target(raw_destination: &str, raw_query: Option<&str>) -> Result<Target> {
    let mut destination = raw_destination.to_string();
    if destination.is_empty() {
        return Err(Invalid::new("a non-empty destination must be provided"));
    }
    let lower = destination.to_ascii_lowercase();
    if lower.starts_with("http%3a") || lower.starts_with("https%3a") {
        destination = percent_encoding::percent_decode_str(&destination)
            .decode_utf8()
            .map_err(|_| Invalid::new("invalid destination url: not valid UTF-8"))?
            .into_owned();
    }
    for scheme in ["http:/", "https:/"] {
        if let Some(rest) = strip_prefix_ignore_case(&destination, scheme)
            && !rest.starts_with('/')
        {
            destination = format!("{}/{rest}", &destination[..scheme.len()]);
        }
    }

    let mut kept = Vec::new();
    let mut query_options = Vec::new();
    for pair in raw_query.unwrap_or_default().split('&').filter(|pair| !pair.is_empty()) {
        let raw_key = pair.split('=').next().unwrap_or_default();
        let key = decode_component(raw_key);
        if key == "qstash_token" {
            continue;
        }
        if strip_prefix_ignore_case(&key, "upstash-").is_some() {
            let value = pair.split_once('=').map(|(_, value)| decode_component(value));
            query_options.push((key, value.unwrap_or_default()));
            continue;
        }
        kept.push(pair);
    }

    let lower = destination.to_ascii_lowercase();
    let destination = if lower.starts_with("http://") || lower.starts_with("https://") {
        if !kept.is_empty() {
            destination.push('?');
            destination.push_str(&kept.join("&"));
        }
        Destination::Url(checked_url(&destination, "destination")?)
    } else if let Some(name) = destination.strip_prefix("api/") {
        Destination::Api(name.to_string())
    } else if destination.contains("://") {
        return Err(Invalid::new(format!(
            "invalid destination url {destination:?}: endpoint has invalid scheme, add http:// or https://"
        )));
    } else {
        validate_name(&destination, "URL group")?;
        Destination::UrlGroup(destination)
    };
    Ok(Target { destination, query_options })
}

fn decode_component(raw: &str) -> String {
    url::form_urlencoded::parse(format!("k={raw}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// Checks that `url` is an absolute http(s) URL with a host and returns it as it is stored,
/// shown, signed (the JWT `sub`) and requested. That is `url` verbatim (§3.2: no `/` added, no
/// case folded), unless parsing it changes what follows the host: dot segments (`/a/../b`),
/// backslashes or characters that must be percent-encoded. The request goes to the parsed URL,
/// so then the parsed URL is the one stored and signed, and the receiver's URL and the `sub`
/// agree. `what` names the URL in the error.
pub fn checked_url(url: &str, what: &str) -> Result<String> {
    // A fragment is never sent, so it is never part of the URL stored, signed and requested.
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let parsed = url::Url::parse(url).map_err(|error| Invalid::new(format!("invalid {what} url {url:?}: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Invalid::new(format!(
            "invalid {what} url {url:?}: endpoint has invalid scheme, add http:// or https://"
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Invalid::new(format!("invalid {what} url {url:?}: missing host")));
    }
    let requested = &parsed[url::Position::BeforePath..];
    let given = after_host(url);
    // The parser also drops spaces, tabs and newlines wherever they are.
    let verbatim = !url.bytes().any(|byte| byte <= b' ' || byte == 0x7f)
        && (given == requested || (!given.starts_with('/') && requested.strip_prefix('/') == Some(given)));
    Ok(if verbatim { url.to_string() } else { parsed.into() })
}

/// What follows the scheme, user info, host and port of an absolute http(s) URL as written:
/// the path (empty or from the first `/` or `\`), query and fragment.
fn after_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find(['/', '\\', '?', '#']).map_or("", |start| &rest[start..])
}

/// Names of queues, URL groups and schedule ids: `[A-Za-z0-9._-]+`.
pub fn validate_name(name: &str, what: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 256
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Invalid::new(format!("invalid {what} name {name:?}: use only letters, digits, '.', '_' and '-'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(raw: &str, query: Option<&str>) -> String {
        match parse_target(raw, query).unwrap().destination {
            Destination::Url(url) => url,
            other => panic!("expected a url, got {other:?}"),
        }
    }

    #[test]
    fn resolves_what_the_request_would_resolve_and_keeps_the_rest_verbatim() {
        // Dot segments, backslashes and unencoded characters: what is requested is stored.
        assert_eq!(url("http://example.com/a/../b", None), "http://example.com/b");
        assert_eq!(url("http://example.com/a/./b/../../c?x=1", None), "http://example.com/c?x=1");
        assert_eq!(url("http://example.com/a/%2e%2E/b", None), "http://example.com/b");
        assert_eq!(url("http://example.com/..", None), "http://example.com/");
        assert_eq!(url("http://example.com/a\\..\\b", None), "http://example.com/b");
        assert_eq!(url("http://example.com/a b", None), "http://example.com/a%20b");
        assert_eq!(url("http://example.com/x", Some("q=a'b")), "http://example.com/x?q=a%27b");
        assert_eq!(checked_url("http://exam\tple.com/x", "callback").unwrap(), "http://example.com/x");
        // A fragment is never sent: it is dropped, the rest kept as written.
        assert_eq!(
            checked_url("HTTP://Example.com/a//b?q=1#frag", "destination").unwrap(),
            "HTTP://Example.com/a//b?q=1"
        );
        assert_eq!(url("http://example.com/a/../b#frag", None), "http://example.com/b");
        // Once normalised, a URL stays as it is.
        for normalised in ["http://example.com/b", "http://example.com/a%20b", "http://example.com/x?q=a%27b"] {
            assert_eq!(checked_url(normalised, "destination").unwrap(), normalised);
        }
        // Everything else is verbatim: no `/` added, no case folded, no default port dropped.
        for verbatim in [
            "http://example.com",
            "http://example.com?a=1",
            "HTTP://Example.COM:80/Path/",
            "https://user:pw@example.com:8443/a//b/?q=%20&r=..",
            "http://[::1]:8080/a.b/c..d/.e",
        ] {
            assert_eq!(checked_url(verbatim, "destination").unwrap(), verbatim);
        }
    }

    #[test]
    fn keeps_the_raw_url_and_reattaches_the_query() {
        assert_eq!(url("https://example.com/a//b", None), "https://example.com/a//b");
        assert_eq!(url("http://example.com", None), "http://example.com");
        assert_eq!(
            url("https://mock.httpstatus.io/200", Some("sleep=30000&qstash_token=abc&a=%20b")),
            "https://mock.httpstatus.io/200?sleep=30000&a=%20b"
        );
        assert_eq!(url("https:/example.com/x", None), "https://example.com/x");
        assert_eq!(url("https%3A%2F%2Fexample.com%2Fx", None), "https://example.com/x");
        assert_eq!(url("HTTP://Example.com/", None), "HTTP://Example.com/");
    }

    #[test]
    fn extracts_upstash_query_options() {
        let target = parse_target(
            "https://example.com/hook",
            Some("upstash-retries=3&x=1&Upstash-Delay=100s&upstash-header-forward=true"),
        )
        .unwrap();
        assert_eq!(target.destination, Destination::Url("https://example.com/hook?x=1".into()));
        assert_eq!(
            target.query_options,
            vec![
                ("upstash-retries".to_string(), "3".to_string()),
                ("Upstash-Delay".to_string(), "100s".to_string()),
                ("upstash-header-forward".to_string(), "true".to_string()),
            ]
        );
    }

    #[test]
    fn recognises_groups_apis_and_errors() {
        assert_eq!(parse_target("my-group", None).unwrap().destination, Destination::UrlGroup("my-group".into()));
        assert_eq!(parse_target("api/llm", None).unwrap().destination, Destination::Api("llm".into()));
        assert_eq!(parse_target("", None).unwrap_err().0, "a non-empty destination must be provided");
        assert!(parse_target("http://", None).is_err());
        assert!(parse_target("ftp://example.com", None).is_err());
        assert!(parse_target("not a group", None).is_err());
    }
}
