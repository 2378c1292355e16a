//! A connection's socket as hyper sees it: reads start the header timer of an idle
//! connection, completed flushes mark the end of an answer, blocked writes mark the connection
//! waiting on its client and stall for at most the write timeout (tokio-io-timeout), and the
//! answers hyper writes on its own for a request it cannot
//! parse (400, 414, 431, with empty bodies) get tern's `{"error"}` body.

use super::connection::ConnectionState;
use crate::error::{error_json, unparsed_request_message};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_io_timeout::TimeoutStream;

pub struct ConnectionIo {
    inner: Pin<Box<TimeoutStream<TcpStream>>>,
    connection: Arc<ConnectionState>,
    /// An answer written in place of hyper's own, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl ConnectionIo {
    pub fn new(stream: TcpStream, write_timeout: std::time::Duration, connection: Arc<ConnectionState>) -> Self {
        let mut inner = TimeoutStream::new(stream);
        inner.set_write_timeout(Some(write_timeout));
        ConnectionIo { inner: Box::pin(inner), connection, replacement: None }
    }

    /// Writes what is left of a replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, written)) = &mut self.replacement {
            if *written == answer.len() {
                self.replacement = None;
                break;
            }
            let poll = self.inner.as_mut().poll_write(cx, &answer[*written..]);
            self.connection.write_polled(poll.is_ready());
            match ready!(poll) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => *written += n,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// If `bytes` start with one of hyper's own error answers, takes it (reporting it written)
    /// and queues tern's answer instead.
    fn take_automatic_answer(&mut self, bytes: &[u8]) -> Option<usize> {
        let (answer, consumed) = json_answer_for(bytes)?;
        self.replacement = Some((answer, 0));
        Some(consumed)
    }
}

/// tern's answer for the head hyper wrote for a request it could not parse, and the length of
/// that head. hyper writes such a head whole, with `connection: close` and `content-length: 0`;
/// every answer of tern's own with these statuses has a JSON body, so nothing else matches.
fn json_answer_for(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let status = bytes.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let message = unparsed_request_message(std::str::from_utf8(status).ok()?.parse().ok()?)?;
    let head_end = bytes.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let headers: Vec<&str> = lines.collect();
    let is = |line: &&str, expected: &str| line.eq_ignore_ascii_case(expected);
    if !headers.iter().any(|line| is(line, "content-length: 0"))
        || !headers.iter().any(|line| is(line, "connection: close"))
    {
        return None;
    }
    let body = error_json(message);
    let mut answer = format!("{status_line}\r\n");
    for line in headers.iter().filter(|line| !is(line, "content-length: 0")) {
        answer.push_str(line);
        answer.push_str("\r\n");
    }
    answer.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()));
    Some((answer.into_bytes(), head_end + 4))
}

impl AsyncRead for ConnectionIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = ready!(self.inner.as_mut().poll_read(cx, buf));
        if result.is_ok() && buf.filled().len() > before {
            self.connection.bytes_read();
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for ConnectionIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_replacement(cx))?;
        if let Some(consumed) = self.take_automatic_answer(buf) {
            return Poll::Ready(Ok(consumed));
        }
        let poll = self.inner.as_mut().poll_write(cx, buf);
        self.connection.write_polled(poll.is_ready());
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_replacement(cx))?;
        if let Some(first) = bufs.iter().find(|slice| !slice.is_empty())
            && let Some(consumed) = self.take_automatic_answer(first)
        {
            return Poll::Ready(Ok(consumed));
        }
        let poll = self.inner.as_mut().poll_write_vectored(cx, bufs);
        self.connection.write_polled(poll.is_ready());
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        let result = ready!(self.inner.as_mut().poll_flush(cx));
        if result.is_ok() {
            self.connection.flushed();
        }
        Poll::Ready(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        self.inner.as_mut().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_answers_to_unparsable_requests_get_json_bodies() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 23:28:36 GMT\r\n\r\n";
        let (answer, consumed) = json_answer_for(head).expect("replaced");
        assert_eq!(consumed, head.len());
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n"), "{head}");
        assert!(head.contains("\r\ndate: Sun, 06 Dec 2026 23:28:36 GMT"), "{head}");
        assert!(head.contains("\r\ncontent-type: application/json\r\n"), "{head}");
        assert!(head.ends_with(&format!("content-length: {}", body.len())), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["error"].as_str().unwrap().contains("headers"), "{json}");
    }

    #[test]
    fn tern_answers_pass_unchanged() {
        for bytes in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"error\":\"\"}"[..],
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"{\"error\": \"HTTP/1.1 400 \"}",
        ] {
            assert!(json_answer_for(bytes).is_none(), "{}", String::from_utf8_lossy(bytes));
        }
    }
}
