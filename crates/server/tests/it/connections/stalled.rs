//! Clients that hold connections without using them: HTTP/2 clients whose flow control never
//! lets an answer through (their pings answered), HTTP/1 clients that pipeline requests and do
//! not read the answers, clients that never finish a request body. Filling the connection
//! limit, they must not lock honest clients out; an HTTP/2 answer never taken must not hold its
//! connection forever.

use super::{TOKEN, Tern, honest_clients_are_served};
use crate::harness::{DEADLINE, Receiver, http_client};
use axum::body::Bytes;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// An HTTP/2 connection (prior knowledge) advertising a zero stream window, whose requests'
/// answers have arrived up to their heads: their bodies can never be sent. The h2 crate answers
/// the server's pings while `closed` runs; it ends when the server closes the connection.
struct StalledHttp2 {
    closed: JoinHandle<()>,
    _client: h2::client::SendRequest<Bytes>,
    _answers: Vec<h2::RecvStream>,
}

impl StalledHttp2 {
    async fn open(tern: &Tern, streams: usize) -> StalledHttp2 {
        let tcp = tokio::net::TcpStream::connect(&tern.address).await.expect("connects");
        let (client, connection) =
            h2::client::Builder::new().initial_window_size(0).handshake::<_, Bytes>(tcp).await.expect("handshake");
        let closed = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.expect("ready");
        let mut answers = Vec::new();
        for stream in 0..streams {
            // Unauthenticated: a 404 with a JSON body.
            let request = hyper::Request::get(tern.url(&format!("/nope-{stream}"))).body(()).unwrap();
            let (answer, _) = client.send_request(request, true).expect("a stream");
            let answer = answer.await.expect("an answer's head");
            assert_eq!(answer.status(), 404);
            answers.push(answer.into_body());
            client = client.ready().await.expect("ready");
        }
        StalledHttp2 { closed, _client: client, _answers: answers }
    }
}

/// Waits until the server has closed at least one of the attack's connections.
async fn wait_until_one_closed(tern: &Tern, mut closed: impl FnMut() -> bool) {
    let guard = tokio::time::Instant::now() + DEADLINE;
    while !closed() {
        assert!(tokio::time::Instant::now() < guard, "no attack connection made room:\n{}", tern.stderr_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_that_never_take_their_answers_lock_nobody_out() {
    const OPEN_FILES: u64 = 256;
    const MAX_CONNECTIONS: usize = 64;
    const STREAMS: usize = 3;
    let receiver = Receiver::start().await;
    // Long timeouts: the connection limit alone must hold the attack off.
    let settings = format!("max_connections = {MAX_CONNECTIONS}\nwrite_timeout = \"10m\"\nidle_timeout = \"10m\"");
    let tern = Tern::start(&settings, Some(OPEN_FILES)).await;
    let attack = (0..MAX_CONNECTIONS).map(|_| StalledHttp2::open(&tern, STREAMS));
    let attack = futures_util::future::join_all(attack).await;

    honest_clients_are_served(&tern, &receiver, "/during-http2-attack").await;
    wait_until_one_closed(&tern, || attack.iter().any(|connection| connection.closed.is_finished())).await;
    let stderr = tern.stderr_text();
    assert!(!stderr.contains("Too many open files"), "{stderr}");
}

#[tokio::test]
async fn an_http2_answer_never_taken_closes_its_connection_after_the_write_timeout() {
    let tern = Tern::start("write_timeout = \"1s\"\nidle_timeout = \"10m\"", None).await;
    let stalled = StalledHttp2::open(&tern, 2).await;
    tokio::time::timeout(DEADLINE, stalled.closed)
        .await
        .unwrap_or_else(|_| panic!("the connection was never closed:\n{}", tern.stderr_text()))
        .unwrap();
    let stderr = tern.stderr_text();
    assert!(stderr.contains("does not take its answer"), "{stderr}");
}

/// A tenant's listings whose answers are never taken hold its share of the listing budget; one
/// more listing on the same connection waits on that share — on its own client — so the
/// connection is still closed after the write timeout (a wait in the budget once counted as the
/// server's work, which kept the connection, and the share, for good).
#[tokio::test]
async fn an_http2_listing_waiting_on_its_own_share_does_not_keep_the_connection() {
    // Each listing reserves twice a page: two hold the whole budget of the one user.
    let settings = "write_timeout = \"1s\"\nidle_timeout = \"10m\"\n\
                    [limits]\nlisting_budget = 4194304\nlist_page_bytes = 1048576";
    let tern = Tern::start(settings, None).await;
    // An answer larger than what HTTP/2 buffers for a stream: it is never taken in whole.
    let publish = http_client()
        .post(tern.url("/v2/publish/http://127.0.0.1:9/later"))
        .bearer_auth(TOKEN)
        .header("Upstash-Delay", "1h")
        .body(vec![b'x'; 500_000])
        .send()
        .await
        .expect("publish answers");
    assert_eq!(publish.status(), 200);
    let tcp = tokio::net::TcpStream::connect(&tern.address).await.expect("connects");
    let (client, connection) =
        h2::client::Builder::new().initial_window_size(0).handshake::<_, Bytes>(tcp).await.expect("handshake");
    let closed = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("ready");
    let mut answers = Vec::new();
    for _ in 0..3 {
        let request = hyper::Request::get(tern.url("/v2/logs"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(())
            .unwrap();
        let (answer, _) = client.send_request(request, true).expect("a stream");
        answers.push(answer);
        client = client.ready().await.expect("ready");
    }
    // Whichever two come first take the budget; the answers' bodies are kept (a body dropped
    // resets its stream, which gives its share back).
    let answers: Vec<_> = answers
        .into_iter()
        .map(|answer| tokio::spawn(async move { answer.await.map(|answer| (answer.status(), answer.into_body())) }))
        .collect();
    tokio::time::timeout(DEADLINE, closed)
        .await
        .unwrap_or_else(|_| panic!("the connection was never closed:\n{}", tern.stderr_text()))
        .unwrap();
    let mut answered = Vec::new();
    for answer in answers {
        answered.push(answer.await.unwrap().map(|(status, _body)| status.as_u16()).ok());
    }
    answered.sort();
    assert_eq!(answered, vec![None, Some(200), Some(200)], "one listing waited for the budget");
    let stderr = tern.stderr_text();
    assert!(stderr.contains("does not take its answer"), "{stderr}");
}

/// An HTTP/1 connection that asks for a log listing far larger than every buffer between the
/// server and it, and reads only its first bytes: the server's writes block for good.
async fn slow_reader(tern: &Tern) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(tern.address.parse().unwrap()).await.expect("connects");
    let request = format!("GET /v2/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut status = [0u8; 12];
    stream.read_exact(&mut status).await.expect("an answer starts");
    assert_eq!(&status, b"HTTP/1.1 200");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_that_do_not_read_their_answers_lock_nobody_out() {
    const MAX_CONNECTIONS: usize = 8;
    let receiver = Receiver::start().await;
    let settings = format!("max_connections = {MAX_CONNECTIONS}\nwrite_timeout = \"10m\"\nidle_timeout = \"10m\"");
    let tern = Tern::start(&settings, None).await;
    // Its body is in the listing twice, in base64: the answer is larger than the socket
    // buffers (at most a few MiB), so it can never be written whole to a client not reading.
    let published = http_client()
        .post(tern.url(&format!("/v2/publish/{}", receiver.url("/big"))))
        .bearer_auth(TOKEN)
        .body("b".repeat(3 << 20))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 200);
    let attack = futures_util::future::join_all((0..MAX_CONNECTIONS).map(|_| slow_reader(&tern))).await;

    honest_clients_are_served(&tern, &receiver, "/during-http1-attack").await;
    // Read at last: a connection the server closed ends (short of its answer), the others
    // wait for their next request.
    let drained: Vec<_> = attack
        .into_iter()
        .map(|mut stream| tokio::spawn(async move { tokio::io::copy(&mut stream, &mut tokio::io::sink()).await }))
        .collect();
    wait_until_one_closed(&tern, || drained.iter().any(JoinHandle::is_finished)).await;
}

/// A request whose head asked for `100 Continue`: once the handler reads the body (hyper then
/// sends `100 Continue`), a few bytes of it and no more. The task ends when the server has
/// closed the connection.
async fn slow_body(address: String, head: String) -> JoinHandle<()> {
    let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connects");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut continue_line = [0u8; 25];
    stream.read_exact(&mut continue_line).await.expect("100 Continue");
    assert_eq!(&continue_line, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"a few bytes").await.unwrap();
    tokio::spawn(async move {
        let _closed = stream.read_to_end(&mut Vec::new()).await;
    })
}

/// Fills the connection limit with publishes whose bodies `attack` (given tern's address and
/// the request head) holds back, then checks
/// that honest clients are served and an attack connection was closed to make room.
async fn held_back_bodies_lock_nobody_out<F: Future<Output = JoinHandle<()>>>(
    expect_continue: bool,
    attack: impl Fn(String, String) -> F,
) {
    const MAX_CONNECTIONS: usize = 16;
    let receiver = Receiver::start().await;
    let settings = format!(
        "max_connections = {MAX_CONNECTIONS}\nrequest_body_timeout = \"10m\"\nwrite_timeout = \"10m\"\nidle_timeout = \"10m\""
    );
    let tern = Tern::start(&settings, None).await;
    let expect = if expect_continue { "Expect: 100-continue\r\n" } else { "" };
    let head = format!(
        "POST /v2/publish/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{expect}\
         Content-Length: 1000000\r\n\r\n",
        receiver.url("/never-whole")
    );
    let attack = (0..MAX_CONNECTIONS).map(|_| attack(tern.address.clone(), head.clone()));
    let attack = futures_util::future::join_all(attack).await;

    honest_clients_are_served(&tern, &receiver, "/during-body-attack").await;
    wait_until_one_closed(&tern, || attack.iter().any(JoinHandle::is_finished)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_that_never_arrive_lock_nobody_out() {
    held_back_bodies_lock_nobody_out(true, slow_body).await;
}

/// Like [`slow_body`], but the body keeps coming a byte at a time, a few times a second,
/// until the server closes the connection.
async fn trickled_body(address: String, head: String) -> JoinHandle<()> {
    let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connects");
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::spawn(async move {
        let (mut reader, mut writer) = stream.into_split();
        let mut ticks = tokio::time::interval(Duration::from_millis(200));
        let mut answer = [0u8; 1024];
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if writer.write_all(b"a").await.is_err() {
                        return;
                    }
                }
                read = reader.read(&mut answer) => {
                    if matches!(read, Ok(0) | Err(_)) {
                        return;
                    }
                }
            }
        }
    })
}

/// A body that keeps arriving, but slower than any honest upload, is no progress: connections
/// trickling bodies a byte at a time once held their places at the limit for as long as the
/// body timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_trickled_a_byte_at_a_time_lock_nobody_out() {
    held_back_bodies_lock_nobody_out(false, trickled_body).await;
}
