//! One delivery attempt (spec §7, §8, §10): the exact request QStash sends, a fresh signature,
//! the per-attempt timeout, and the classification of what came back.

use crate::clock::Clock;
use crate::config::EngineConfig;
use crate::destinations::{PublicOnlyResolver, public_redirects};
use crate::keys::SigningKeys;
use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::Duration;
use tern_core::ids::new_jwt_id;
use tern_core::retry::{RETRY_HINT_HEADERS, RetryDelayExpr, next_retry_delay, parse_retry_hint};
use tern_core::{AttemptResponse, HeaderList, Message, signing};
use tern_store::NextStep;

/// Forwarded headers that describe the transport and would corrupt the request if copied.
const NOT_FORWARDED: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"];

/// The shared keep-alive client. Idle connections are pooled per host (reqwest bounds them per
/// host only), so destinations on many hosts can hold more sockets than the descriptor budget
/// foresaw: when an attempt finds no descriptor, the pool is dropped for a fresh one, closing
/// every idle connection (attempts in flight keep theirs). The TLS configuration is built once,
/// at start: building it reads the system's certificates, which needs descriptors too.
pub struct DeliveryClient {
    config: EngineConfig,
    tls: rustls::ClientConfig,
    client: std::sync::Mutex<reqwest::Client>,
    /// Keeps no idle connection: a request sent again because its pooled connection was closed
    /// under it goes out on a new one (another pooled connection may be as stale).
    unpooled: reqwest::Client,
}

/// The clients of one attempt (cheap handles).
#[derive(Clone)]
pub struct Clients {
    pub pooled: reqwest::Client,
    pub unpooled: reqwest::Client,
}

impl DeliveryClient {
    pub fn new(config: &EngineConfig) -> Result<DeliveryClient, String> {
        let tls = tls_config().map_err(|error| format!("cannot set up TLS: {error}"))?;
        let client = build_client(config, tls.clone(), true).map_err(|error| error.to_string())?;
        let unpooled = build_client(config, tls.clone(), false).map_err(|error| error.to_string())?;
        Ok(DeliveryClient { config: config.clone(), tls, client: std::sync::Mutex::new(client), unpooled })
    }

    /// The current clients (cheap handles on the shared pool).
    pub fn get(&self) -> Clients {
        Clients { pooled: self.client.lock().expect("client lock").clone(), unpooled: self.unpooled.clone() }
    }

    /// Replaces the pool with an empty one.
    pub fn drop_idle_connections(&self) {
        match build_client(&self.config, self.tls.clone(), true) {
            Ok(fresh) => *self.client.lock().expect("client lock") = fresh,
            Err(error) => tracing::error!(%error, "could not build a fresh HTTP client"),
        }
    }
}

/// What reqwest would configure itself: the platform's certificate verification, HTTP/2 or
/// HTTP/1.1 by ALPN.
fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// Builds a client, keeping connections alive (`pooled`, per host) or not; HTTP/2 is used when
/// the destination offers it over TLS.
fn build_client(config: &EngineConfig, tls: rustls::ClientConfig, pooled: bool) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(30))
        // Shorter than reqwest's default: an idle connection holds a file descriptor.
        .pool_idle_timeout(Duration::from_secs(20))
        // More idle connections to one host than attempts can run at once are never reused:
        // they would only hold file descriptors.
        .pool_max_idle_per_host(if pooled { config.max_concurrent_deliveries } else { 0 });
    if !config.allow_private_destinations {
        builder = builder.dns_resolver(Arc::new(PublicOnlyResolver)).redirect(public_redirects());
    }
    builder.build()
}

/// How long an attempt of `message` waits for its answer: its timeout, at most the configured
/// maximum.
pub fn timeout_ms(config: &EngineConfig, message: &Message) -> i64 {
    let max_timeout = config.limits.max_timeout.as_millis() as i64;
    message.spec.timeout_ms.map_or(max_timeout, |ms| (ms as i64).min(max_timeout))
}

/// An attempt that could not be made for a reason of this process, not the destination's: no
/// file descriptor was free for its socket. It is no attempt at all.
#[derive(Debug, thiserror::Error)]
#[error("no file descriptor for the connection: {0}")]
pub struct NoDescriptor(String);

/// Sends one attempt of `message`, which starts at `started` (the clock's time), and waits for
/// the answer, at most [`timeout_ms`].
pub async fn attempt(
    clients: &Clients,
    clock: &dyn Clock,
    config: &EngineConfig,
    keys: &SigningKeys,
    message: &Message,
    started: i64,
) -> Result<AttemptResponse, NoDescriptor> {
    let spec = &message.spec;
    if !config.allow_private_destinations
        && let Err(refused) = crate::destinations::check_public_url(&spec.url)
    {
        return Ok(failure(refused.0));
    }
    let Ok(method) = reqwest::Method::from_bytes(spec.method.as_bytes()) else {
        return Ok(failure(format!("invalid method {}", spec.method)));
    };
    let signature =
        signing::sign(&keys.current, &spec.url, &message.body, started / 1000, new_jwt_id(), config.jwt_nbf_is_iat);
    let headers = request_headers(message, &signature);
    let request = |client: &reqwest::Client| {
        client.request(method.clone(), &spec.url).headers(headers.clone()).body(message.body.clone())
    };

    let timeout = timeout_ms(config, message);
    let exchange = async {
        let response = match request(&clients.pooled).send().await {
            // A kept-alive connection the destination closed just as it was reused: sent again at
            // once on a new one, as browsers do (the destination may have seen the request; the
            // message id lets it tell).
            Err(error) if stale_connection(&error) => request(&clients.unpooled).send().await?,
            result => result?,
        };
        let status = response.status().as_u16();
        let headers = response_headers(response.headers());
        let body = read_limited(response, config.max_body_bytes).await?;
        Ok::<_, reqwest::Error>(AttemptResponse { status, headers, body, error: None })
    };
    Ok(tokio::select! {
        result = exchange => match result {
            Ok(mut response) => {
                if !(200..300).contains(&response.status) {
                    response.error = Some(format!("destination responded with status {}", response.status));
                }
                response
            }
            // Only before the request went out: a redirect's target failing this way means the
            // first hop already received it, which counts as an attempt.
            Err(error) if out_of_descriptors(&error) && failed_at(&error, &spec.url) => {
                return Err(NoDescriptor(describe(&error)));
            }
            Err(error) => failure(describe(&error)),
        },
        () = clock.sleep_until(started + timeout) => failure(format!("timeout: no response within {timeout} ms")),
    })
}

/// Whether `error` comes from running out of file descriptors (`EMFILE`, `ENFILE`) anywhere in
/// its chain of sources.
pub fn out_of_descriptors(error: &(dyn std::error::Error + 'static)) -> bool {
    let exhausted = |io: &std::io::Error| {
        let errno = io.raw_os_error().map(rustix::io::Errno::from_raw_os_error);
        matches!(errno, Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE))
    };
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            // An io::Error's source skips the error it wraps: look inside it too.
            if exhausted(io) || io.get_ref().is_some_and(|inner| out_of_descriptors(inner)) {
                return true;
            }
        }
        next = error.source();
    }
    false
}

/// Whether `error` is a connection closed or reset under the request before any response
/// arrived, what a pooled connection the peer closed meanwhile looks like.
fn stale_connection(error: &reqwest::Error) -> bool {
    if error.is_timeout() || error.is_connect() || error.is_redirect() {
        return false;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = next {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        if cause.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message) {
            return true;
        }
        next = cause.source();
    }
    false
}

/// Whether `error` is about the request to `url` itself (not a redirect's target).
fn failed_at(error: &reqwest::Error, url: &str) -> bool {
    error.url().is_none_or(|failed| reqwest::Url::parse(url).is_ok_and(|requested| &requested == failed))
}

fn failure(error: String) -> AttemptResponse {
    AttemptResponse { status: 0, error: Some(error), ..AttemptResponse::default() }
}

/// The error chain of a failed request, without the URL reqwest prefixes.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_connect() { "connection failed".to_string() } else { "request failed".to_string() };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn request_headers(message: &Message, signature: &str) -> HeaderMap {
    let spec = &message.spec;
    let mut headers = HeaderMap::new();
    for (name, value) in spec.headers.iter().chain(spec.passthrough.iter()) {
        if NOT_FORWARDED.iter().any(|transport| name.eq_ignore_ascii_case(transport)) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.append(name, value);
        }
    }
    // Set last so that no forwarded header can replace them.
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("user-agent", "Upstash-QStash");
    set("upstash-message-id", &message.id.to_string());
    set("upstash-signature", signature);
    set("upstash-retried", &message.retried.to_string());
    if let Some(schedule_id) = &spec.schedule_id {
        set("upstash-schedule-id", schedule_id);
    }
    if let Some(topic_name) = &spec.topic_name {
        set("upstash-topic-name", topic_name);
    }
    if let Some(caller_ip) = &spec.caller_ip {
        set("upstash-caller-ip", caller_ip);
    }
    headers
}

fn response_headers(headers: &HeaderMap) -> HeaderList {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect()
}

/// Reads the body, keeping at most `limit` bytes (the rest is drained and dropped).
async fn read_limited(mut response: reqwest::Response, limit: usize) -> reqwest::Result<Bytes> {
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(body.freeze())
}

/// What the attempt that got `response` leads to (spec §10).
pub fn classify(message: &Message, response: &AttemptResponse, now: i64, dlq_id: impl FnOnce() -> String) -> NextStep {
    if (200..300).contains(&response.status) {
        return NextStep::Delivered;
    }
    let non_retryable = response.status == 489
        && response.headers.get("upstash-nonretryable-error").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if non_retryable || message.retried >= message.spec.max_retries {
        return NextStep::Failed { dlq_id: dlq_id() };
    }
    let hint = RETRY_HINT_HEADERS
        .iter()
        .find_map(|name| response.headers.get(name).and_then(|value| parse_retry_hint(value, now)));
    let expression = message.spec.retry_delay.as_deref().and_then(|source| RetryDelayExpr::parse(source).ok());
    let delay = next_retry_delay(message.retried, expression.as_ref(), hint);
    NextStep::Retry { at: now + delay.as_millis() as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::{MessageId, MessageState, PublishLimits, PublishOptions};

    fn message(headers: &[(&str, &str)], retried: u32) -> Message {
        let options = PublishOptions::from_headers(headers.iter().copied(), true).unwrap();
        Message {
            id: MessageId::generate(),
            user_id: "u".into(),
            spec: options.to_spec("http://127.0.0.1:1/".into(), Some("10.0.0.9".into()), &PublishLimits::default()),
            body: Bytes::new(),
            created_at: 0,
            not_before: 0,
            state: MessageState::Pending,
            retried,
            due_at: Some(0),
            finished_at: None,
            dlq_id: None,
            last_response: None,
        }
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> AttemptResponse {
        let mut response = AttemptResponse { status, ..Default::default() };
        for (name, value) in headers {
            response.headers.push(*name, *value);
        }
        response
    }

    #[test]
    fn success_failure_and_retry_timing() {
        let dlq = || "d".to_string();
        assert_eq!(classify(&message(&[], 0), &response(204, &[]), 0, dlq), NextStep::Delivered);
        assert_eq!(classify(&message(&[], 0), &response(500, &[]), 0, dlq), NextStep::Retry { at: 12_182 });
        assert_eq!(classify(&message(&[], 1), &response(0, &[]), 0, dlq), NextStep::Retry { at: 148_413 });
        assert_eq!(classify(&message(&[], 3), &response(500, &[]), 0, dlq), NextStep::Failed { dlq_id: "d".into() });
        let expression = message(&[("Upstash-Retry-Delay", "1000 * (1 + retried)")], 1);
        assert_eq!(classify(&expression, &response(500, &[]), 0, dlq), NextStep::Retry { at: 2_000 });
        let hinted = response(429, &[("Retry-After", "7")]);
        assert_eq!(classify(&expression, &hinted, 0, dlq), NextStep::Retry { at: 7_000 });
        let reset = response(429, &[("X-RateLimit-Reset-Tokens", "2s")]);
        assert_eq!(classify(&message(&[], 0), &reset, 0, dlq), NextStep::Retry { at: 2_000 });
    }

    #[test]
    fn status_489_with_the_header_fails_at_once() {
        let dlq = || "d".to_string();
        let non_retryable = response(489, &[("Upstash-NonRetryable-Error", "true")]);
        assert_eq!(classify(&message(&[], 0), &non_retryable, 0, dlq), NextStep::Failed { dlq_id: "d".into() });
        assert!(matches!(classify(&message(&[], 0), &response(489, &[]), 0, dlq), NextStep::Retry { .. }));
    }

    #[test]
    fn running_out_of_descriptors_is_found_anywhere_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Connect(#[source] std::io::Error);
        let emfile = || std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        assert!(out_of_descriptors(&Connect(emfile())));
        assert!(out_of_descriptors(&Connect(std::io::Error::other(Connect(emfile())))));
        let enfile = std::io::Error::from_raw_os_error(rustix::io::Errno::NFILE.raw_os_error());
        assert!(out_of_descriptors(&enfile));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!out_of_descriptors(&Connect(refused)));
    }

    #[test]
    fn protocol_headers_cannot_be_overridden() {
        let message = message(
            &[
                ("Upstash-Forward-Upstash-Message-Id", "forged"),
                ("Upstash-Forward-X-A", "1"),
                ("Upstash-Forward-Content-Length", "9"),
            ],
            2,
        );
        let headers = request_headers(&message, "sig");
        assert_eq!(headers["upstash-message-id"], message.id.to_string().as_str());
        assert_eq!(headers["upstash-signature"], "sig");
        assert_eq!(headers["upstash-retried"], "2");
        assert_eq!(headers["user-agent"], "Upstash-QStash");
        assert_eq!(headers["upstash-caller-ip"], "10.0.0.9");
        assert_eq!(headers["x-a"], "1");
        assert!(headers.get("content-length").is_none());
    }
}
