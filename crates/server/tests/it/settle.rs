//! The check the tests rely on to assert that something does *not* happen
//! ([`TestServer::settle`], [`Engine::activity`](tern_engine::Engine::activity)): it must not
//! report the engine settled while a delivery or a tick is still to come without the test's
//! help. These tests run on one thread, so between two awaits nothing in the engine moves: what
//! they read right after moving the clock or releasing a request is the state before the engine
//! reacted to it.

use crate::harness::*;
use crate::schedule_support::*;
use std::time::Duration;

#[tokio::test]
async fn a_message_that_came_due_is_work_in_progress_until_it_is_delivered() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    server.publish_ok(&receiver.url("/later"), &[("Upstash-Delay", "10s")], "later").await;
    receiver.assert_count_stays(&server, "/later", 0).await;
    assert!(server.activity().settled(0));

    server.advance(Duration::from_secs(10));
    let activity = server.activity();
    assert!(activity.starts_due && !activity.settled(0), "{activity:?}");
    receiver.assert_count_stays(&server, "/later", 1).await;
}

#[tokio::test]
async fn an_attempt_counts_as_settled_only_while_a_receiver_holds_it() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let other = Receiver::start().await;
    receiver.script("/held", vec![Reply::Hold(200)]);
    other.script("/hangs", vec![Reply::Hang]);
    server.publish_ok(&receiver.url("/held"), &[], "held").await;
    server.publish_ok(&other.url("/hangs"), &[], "hangs").await;
    server.settle(&[&receiver, &other]).await;
    let activity = server.activity();
    assert_eq!(activity.attempts, 2, "{activity:?}");
    assert!(!activity.settled(receiver.held()), "the request to the other receiver is not accounted for");
    assert!(activity.settled(receiver.held() + other.held()));

    // Released, the request answers by itself: its attempt is work in progress again.
    receiver.release("/held", 1);
    assert_eq!(receiver.held(), 0);
    assert!(!server.activity().settled(other.held()));
    server.settle(&[&receiver, &other]).await;
    assert_eq!(server.activity().attempts, 1);
}

#[tokio::test]
async fn an_attempt_past_its_timeout_is_work_in_progress_and_its_retry_comes_before_settling() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    receiver.script("/hang", vec![Reply::Hang]);
    let headers = [("Upstash-Timeout", "5s"), ("Upstash-Retries", "1"), ("Upstash-Retry-Delay", "0")];
    server.publish_ok(&receiver.url("/hang"), &headers, "slow").await;
    receiver.wait_for("/hang", 1).await;
    server.settle(&[&receiver]).await;

    server.advance(Duration::from_secs(5));
    let activity = server.activity();
    assert_eq!(activity.attempts_timed_out, 1, "{activity:?}");
    assert!(!activity.settled(receiver.held()));
    // The timed-out attempt ends, and its retry (due at once) is sent and hangs in turn.
    receiver.assert_count_stays(&server, "/hang", 2).await;
}

#[tokio::test]
async fn a_due_schedule_tick_is_work_in_progress_until_its_message_is_delivered() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    create_ok(&server, &receiver.url("/tick"), "* * * * *", &[], "tick").await;
    let first = next_minute(server.now_ms());
    advance_to(&server, first - 1);
    receiver.assert_count_stays(&server, "/tick", 0).await;

    advance_to(&server, first);
    let activity = server.activity();
    assert!(activity.ticking && !activity.settled(0), "{activity:?}");
    receiver.assert_count_stays(&server, "/tick", 1).await;
}
