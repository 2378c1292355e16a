//! `tern dev`: a drop-in for `qstash dev` (spec §21) — the four well-known users with their
//! exact tokens and signing keys, and a banner with the variables to copy.

use crate::config::{Config, UserConfig};
use std::path::PathBuf;

/// `(user id, QSTASH_TOKEN, QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY)`.
pub const DEV_USERS: [(&str, &str, &str, &str); 4] = [
    (
        "defaultUser",
        "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0=",
        "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r",
        "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs",
    ),
    (
        "testUser1",
        "eyJVc2VySUQiOiJ0ZXN0VXNlcjEiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9",
        "sig_7GVPjvuwsfqF65iC8fSrs1dfYruM",
        "sig_5NoELc3EFnZn4DVS5bDs2Nk4b7Ua",
    ),
    (
        "testUser2",
        "eyJVc2VySUQiOiJ0ZXN0VXNlcjIiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9",
        "sig_6jWGaWRxHsw4vMSPJprXadyvrybF",
        "sig_7qHbvhmahe5GwfePDiS5Lg3pi6Qx",
    ),
    (
        "testUser3",
        "eyJVc2VySUQiOiJ0ZXN0VXNlcjMiLCJQYXNzd29yZCI6InRlc3RQYXNzd29yZCJ9",
        "sig_5T8FcSsynBjn9mMLBsXhpacRovJf",
        "sig_7GFR4YaDshFcqsxWRZpRB161jguD",
    ),
];

/// The plan whose limits the dev server mirrors (`qstash dev -quota`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Quota {
    Payg,
    Pro,
}

pub fn dev_users() -> Vec<UserConfig> {
    DEV_USERS
        .iter()
        .map(|(id, token, current, next)| UserConfig {
            id: id.to_string(),
            token: token.to_string(),
            readonly_token: None,
            current_signing_key: current.to_string(),
            next_signing_key: next.to_string(),
        })
        .collect()
}

/// The configuration `tern dev` runs with.
pub fn dev_config(host: &str, port: u16, data_dir: PathBuf, durable: bool, quota: Quota) -> Config {
    let mut config = Config::defaults();
    config.server.listen = format!("{host}:{port}");
    config.storage.data_dir = data_dir;
    config.storage.durable = durable;
    config.users = dev_users();
    if quota == Quota::Pro {
        config.limits.max_body_bytes = 50 << 20;
        config.limits.max_retries = 20;
        config.limits.max_delay = "3650d".into();
    }
    config
}

/// Prints `banner` to `out`, as best it can: with nobody reading (`tern dev | head -1`) the
/// write fails, and tern goes on serving instead of dying of it, as `println!` would make it.
pub fn announce(out: &mut impl std::io::Write, banner: &str) {
    if let Err(error) = writeln!(out, "{banner}").and_then(|()| out.flush()) {
        tracing::warn!(%error, "the banner could not be printed");
    }
}

/// What `tern dev` prints once it accepts requests. The JS SDK waits for a line matching
/// `/runn+ing( at|\.)/i`; the `KEY=value` lines of the default user come first.
pub fn banner(url: &str, storage: &str) -> String {
    let (_, token, current, next) = DEV_USERS[0];
    let mut text = format!(
        "tern {}: QStash dev server is running.\nStorage: {storage}\n\n\
         QSTASH_URL={url}\nQSTASH_TOKEN={token}\nQSTASH_CURRENT_SIGNING_KEY={current}\nQSTASH_NEXT_SIGNING_KEY={next}\n\n\
         Other test users:\n",
        env!("CARGO_PKG_VERSION")
    );
    for (id, token, current, next) in &DEV_USERS[1..] {
        text.push_str(&format!("  {id}: token {token}\n    current signing key {current}, next signing key {next}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A standard output whose reader is gone.
    struct ClosedPipe;

    impl std::io::Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn the_banner_is_printed_whole_or_given_up_without_a_panic() {
        let text = banner("http://127.0.0.1:8080", "somewhere");
        let mut printed = Vec::new();
        announce(&mut printed, &text);
        assert_eq!(String::from_utf8(printed).unwrap(), format!("{text}\n"));
        announce(&mut ClosedPipe, &text);
    }
}
