//! The operator's choice of where tern may deliver. Loopback and private addresses are allowed
//! by default (local development needs them); when restricted, both IP literals and every
//! address a host name resolves to are checked, so DNS cannot smuggle in a private target.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use tern_core::Invalid;
use tern_core::ip_ranges::is_private;

/// Rejects a destination URL whose host is a private IP literal or `localhost`.
pub fn check_public_url(url: &str) -> Result<(), Invalid> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Ok(());
    };
    let private = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => is_private(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_private(IpAddr::V6(ip)),
        Some(url::Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            domain == "localhost" || domain.ends_with(".localhost")
        }
        None => false,
    };
    if private {
        Err(Invalid::new(format!("destination {url:?} is a private address, which this server does not deliver to")))
    } else {
        Ok(())
    }
}

/// Rejects a message whose destination or callbacks [`check_public_url`] refuses: callbacks are
/// deliveries too, refused when the message is accepted rather than failing after the fact.
pub fn check_public_spec(spec: &tern_core::MessageSpec) -> Result<(), Invalid> {
    check_public_url(&spec.url)?;
    for callback in [&spec.callback, &spec.failure_callback].into_iter().flatten() {
        check_public_url(&callback.url)?;
    }
    Ok(())
}

/// Rejects publish options whose callback or failure callback [`check_public_url`] refuses: a
/// schedule's, when it is created (its destination is checked on its own; a URL group's
/// endpoints were checked when they were added).
pub fn check_public_callbacks(options: &tern_core::PublishOptions) -> Result<(), Invalid> {
    for callback in [&options.callback, &options.failure_callback].into_iter().flatten() {
        check_public_url(callback)?;
    }
    Ok(())
}

/// As many redirects as reqwest follows by default.
const MAX_REDIRECTS: usize = 10;

/// Follows a redirect only to a destination [`check_public_url`] accepts: a redirect to an IP
/// literal never reaches the resolver, so it is checked here (host names still are, there).
pub fn public_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if let Err(refused) = check_public_url(attempt.url().as_str()) {
            attempt.error(format!("redirected to a private address: {}", refused.0))
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// A resolver that drops private addresses (used only when they are not allowed).
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|address| !is_private(address.ip()))
                .collect();
            if addresses.is_empty() {
                return Err(format!("{} resolves only to private addresses", name.as_str()).into());
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP server on 127.0.0.1 that answers every request with a redirect to `location`.
    async fn redirector(location: String) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let answer = format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn a_restricted_client_follows_no_redirect_to_a_private_address() {
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = target.local_addr().unwrap().port();
        let config = crate::config::EngineConfig { allow_private_destinations: false, ..Default::default() };
        let clients = crate::delivery::DeliveryClient::new(&config).unwrap().get();
        for location in
            [format!("http://127.0.0.1:{port}/"), format!("http://localhost:{port}/"), format!("http://[::1]:{port}/")]
        {
            // The first hop is an IP literal: the engine checks that one before sending. Neither
            // client (the one sending again after a closed connection included) follows.
            for client in [&clients.pooled, &clients.unpooled] {
                let error = client.get(redirector(location.clone()).await).send().await.unwrap_err();
                assert!(error.is_redirect(), "{location}: {error:?}");
                assert!(format!("{error:?}").contains("private address"), "{error:?}");
            }
        }
        // Any connection made would already wait in the backlog; the timeout only bounds the look.
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(50), target.accept()).await;
        assert!(nothing.is_err(), "no connection reached the private target");
    }

    #[test]
    fn rejects_private_literals_and_localhost() {
        assert!(check_public_url("http://127.0.0.1:8080/x").is_err());
        assert!(check_public_url("http://[::1]/").is_err());
        assert!(check_public_url("http://LOCALHOST:3000/").is_err());
        assert!(check_public_url("http://localhost.:3000/").is_err());
        assert!(check_public_url("http://api.localhost/").is_err());
        assert!(check_public_url("http://[::ffff:7f00:1]/").is_err());
        assert!(check_public_url("http://[64:ff9b::7f00:1]/").is_err());
        assert!(check_public_url("http://2130706433/").is_err(), "127.0.0.1 as one number");
        assert!(check_public_url("http://0x7f.1/").is_err(), "127.0.0.1 in hex and short");
        assert!(check_public_url("https://example.com/").is_ok());
    }
}
