//! Delivery slots shared between users: tenants whose destinations hang cannot hold every slot
//! while another tenant's message waits (the attempts never end: their timeout runs on the
//! manual clock, which these tests do not move).

use crate::harness::*;
use tern_server::dev::DEV_USERS;

/// Publishes `count` messages as the dev user `user` (an index of [`DEV_USERS`]).
async fn publish_as(server: &TestServer, user: usize, destination: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let request = server
            .http
            .post(format!("{}/v2/publish/{destination}", server.url))
            .bearer_auth(DEV_USERS[user].1)
            .body(format!("message {i} of user {user}"));
        let (status, json) = send(request).await;
        assert!(status.is_success(), "{status}: {json}");
        ids.push(json["messageId"].as_str().expect("messageId").to_string());
    }
    ids
}

/// A server with eight delivery slots, which one user could take all of.
async fn eight_slots() -> TestServer {
    TestServer::start_with(|config| {
        config.delivery.max_concurrent = 8;
        config.delivery.user_parallelism = 8;
    })
    .await
}

#[tokio::test]
async fn a_third_tenant_is_delivered_while_two_others_hang_on_every_slot_they_may_take() {
    let server = eight_slots().await;
    let receiver = Receiver::start().await;
    receiver.script("/hang", vec![Reply::Hang]);
    publish_as(&server, 0, &receiver.url("/hang"), 10).await;
    publish_as(&server, 1, &receiver.url("/hang"), 10).await;
    // Alone, the first takes half the slots; the second then a third of them.
    receiver.wait_in_flight_at_least("/hang", 6).await;

    let third = publish_as(&server, 2, &receiver.url("/fast"), 1).await;
    let delivered = receiver.wait_for("/fast", 1).await;
    assert_eq!(delivered[0].header("upstash-message-id"), Some(third[0].as_str()));
    assert!(receiver.in_flight("/hang") < 8, "a share stayed free: {} hanging", receiver.in_flight("/hang"));
}

#[tokio::test]
async fn the_last_tenant_is_served_when_three_others_started_hanging_one_after_another() {
    let server = eight_slots().await;
    let receiver = Receiver::start().await;
    receiver.script("/hang", vec![Reply::Hang]);
    // Each starts while the earlier ones hold what they took: 4, then 2, then 1.
    for (user, hanging) in [(0, 4), (1, 6), (2, 7)] {
        publish_as(&server, user, &receiver.url("/hang"), 10).await;
        receiver.wait_in_flight_at_least("/hang", hanging).await;
    }
    let last = publish_as(&server, 3, &receiver.url("/fast"), 1).await;
    let delivered = receiver.wait_for("/fast", 1).await;
    assert_eq!(delivered[0].header("upstash-message-id"), Some(last[0].as_str()));
}

/// With every delivery slot held and a message due, the dispatcher once woke for the past due
/// time again and again without yielding: on this single-threaded test runtime that starved
/// the server (this test then never finishes), on a multi-threaded one it burnt a core.
#[tokio::test]
async fn a_due_message_waiting_for_a_slot_does_not_keep_the_dispatcher_busy() {
    let server = TestServer::start_with(|config| {
        config.users.truncate(1);
        config.delivery.max_concurrent = 2;
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.script("/held", vec![Reply::Hold(200)]);
    for _ in 0..2 {
        server.publish_ok(&receiver.url("/held"), &[], "held").await;
    }
    receiver.wait_in_flight("/held", 2).await;
    let waiting = server.publish_ok(&receiver.url("/fast"), &[], "waits for a slot").await;
    // The server still answers, and the waiting message starts once a slot is free.
    assert_eq!(server.log_states(&waiting).await, ["CREATED"]);
    assert_eq!(receiver.requests_to("/fast").len(), 0);
    receiver.release("/held", 1);
    receiver.wait_for("/fast", 1).await;
    receiver.release("/held", 1);
}
