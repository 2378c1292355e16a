//! The `tern` binary: `tern config`, `tern serve` (layered configuration, refusal without
//! users) and `tern dev` (banner, dev users, `--in-memory`).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The first dev user's token (spec §21).
const DEV_TOKEN: &str = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0=";

fn tern() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tern"));
    command.env("RUST_LOG", "warn").env_remove("TERN_CONFIG").stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("tern runs")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `tern` child that is killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GETs `url` until it answers (or a real-time deadline passes): the process is starting.
async fn get_when_up(url: &str, token: &str) -> (u16, Value) {
    let client = crate::harness::http_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(url).bearer_auth(token).send().await {
            let status = response.status().as_u16();
            let body = response.bytes().await.unwrap_or_default();
            return (status, serde_json::from_slice(&body).unwrap_or(Value::Null));
        }
        assert!(Instant::now() < deadline, "tern did not answer at {url}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn config_prints_the_commented_defaults() {
    let output = run(tern().arg("config"));
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("# Unknown keys are an error"), "commented");
    let table: toml::Table = text.parse().expect("the defaults are valid TOML");
    assert_eq!(table["server"]["listen"].as_str(), Some("0.0.0.0:8080"));
}

#[test]
fn serve_refuses_to_start_without_users_or_with_unknown_keys() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("tern.toml");
    std::fs::write(&file, format!("[storage]\ndata_dir = {:?}\n", directory.path().join("data"))).unwrap();
    let output = run(tern().arg("serve").arg("--config").arg(&file));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no users are configured"), "{output:?}");

    std::fs::write(&file, "[server]\nlisten_adress = \"127.0.0.1:1\"\n").unwrap();
    let output = run(tern().arg("serve").arg("--config").arg(&file));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("listen_adress"), "names the unknown key: {output:?}");

    let output = run(tern().arg("serve").env("TERN_LIMITS__MAX_RETRIES", "many"));
    assert!(!output.status.success(), "a bad environment value is refused too");
}

#[tokio::test]
async fn serve_takes_users_and_settings_from_file_and_environment() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("tern.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\n[storage]\ndata_dir = {:?}\n\
             [[users]]\nid = \"acme\"\ntoken = \"acme-token\"\nreadonly_token = \"acme-readonly\"\n\
             current_signing_key = \"sig_fileCurrent\"\nnext_signing_key = \"sig_fileNext\"\n",
            directory.path().join("data")
        ),
    )
    .unwrap();
    let port = free_port();
    let _child = Child(
        tern()
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .env("TERN_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let (status, keys) = get_when_up(&format!("{base}/v2/keys"), "acme-token").await;
    assert_eq!(status, 200, "the environment moved the listener");
    assert_eq!(keys, serde_json::json!({ "current": "sig_fileCurrent", "next": "sig_fileNext" }));
    let client = crate::harness::http_client();
    let logs = client.get(format!("{base}/v2/logs")).bearer_auth("acme-readonly").send().await.unwrap();
    assert_eq!(logs.status(), 200, "the read-only token may read");
    let publish = format!("{base}/v2/publish/http://127.0.0.1:9/x");
    let refused = client.post(&publish).bearer_auth("acme-readonly").send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let unknown = client.get(format!("{base}/v2/keys")).bearer_auth("devs-token").send().await.unwrap();
    assert_eq!(unknown.status(), 401, "no dev users in serve mode");
}

#[tokio::test]
async fn dev_prints_the_banner_and_serves_the_dev_users() {
    let port = free_port();
    let mut child =
        tern().args(["dev", "--in-memory", "--port", &port.to_string()]).stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let _child = Child(child);
    let lines: Vec<String> = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|line| !line.starts_with("Other test users"))
            .collect()
    })
    .await
    .unwrap();
    let banner = lines.join("\n");
    assert!(regex_like_running(&banner), "the JS SDK waits for /runn+ing( at|\\.)/i: {banner}");
    let value = |key: &str| {
        lines
            .iter()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} in {banner}"))
    };
    assert_eq!(value("QSTASH_URL"), format!("http://127.0.0.1:{port}"));
    let (token, current, next) =
        (value("QSTASH_TOKEN"), value("QSTASH_CURRENT_SIGNING_KEY"), value("QSTASH_NEXT_SIGNING_KEY"));
    assert_eq!(token, DEV_TOKEN);
    let (status, keys) = get_when_up(&format!("http://127.0.0.1:{port}/v2/keys"), token).await;
    assert_eq!(status, 200);
    assert_eq!(keys, serde_json::json!({ "current": current, "next": next }));
    assert!(banner.contains("in memory"), "{banner}");
}

/// `running.` or `running at`, as the JS SDK's dev-server detection expects.
fn regex_like_running(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("running.") || lower.contains("running at")
}
