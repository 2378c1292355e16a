//! Workflow runs: creation by an Init message, steps appended in acceptance order and sliced
//! per delivery, ends (success, cancel, failure) with their unfinished messages, listings, and
//! isolation between users.

use super::*;
use tern_core::workflow::{CallType, RunConfig, RunState};
use tern_store::WantedRecords;

const WF_URL: &str = "http://127.0.0.1:1/workflow";

fn init(user: &str, run_id: &str, at: i64, body: &'static [u8]) -> NewMessage {
    let headers = [("Upstash-Workflow-RunId", run_id), ("Upstash-Workflow-Init", "true"), ("Upstash-Retries", "1")];
    let mut message = new_message(user, WF_URL, at, at, &headers);
    message.body = Bytes::from_static(body);
    let options = PublishOptions::from_headers(headers.iter().copied(), true).unwrap();
    message.run = Some(NewRun {
        run_id: run_id.into(),
        url: WF_URL.into(),
        config: RunConfig::from_trigger(&options),
        invoker: None,
        replace: false,
        continues: None,
    });
    message
}

fn step(user: &str, run_id: &str, at: i64, call_type: &str, body: &'static [u8]) -> NewMessage {
    let headers = [("Upstash-Workflow-RunId", run_id), ("Upstash-Workflow-CallType", call_type)];
    let mut message = new_message(user, WF_URL, at, at, &headers);
    message.body = Bytes::from_static(body);
    message
}

pub async fn run_all(backend: &mut impl Backend) {
    an_init_creates_its_run_once(backend).await;
    steps_are_appended_in_order_and_sliced(backend).await;
    ending_a_run_cancels_what_is_left(backend).await;
    a_failed_step_fails_its_run(backend).await;
    runs_are_listed_with_their_steps(backend).await;
    an_invoked_run_replies_to_its_invoker(backend).await;
    a_failed_run_is_taken_up_by_a_new_run(backend).await;
    ended_runs_go_with_their_logs(backend).await;
    a_run_id_used_again_starts_a_run_apart(backend).await;
    a_run_refuses_what_it_cannot_take_and_so_does_its_insert(backend).await;
}

async fn an_init_creates_its_run_once(backend: &mut impl Backend) {
    let store = open(backend, 1_000).await;
    let first = init(USER, "wfr_a", 1_000, b"payload");
    let first_id = first.id;
    assert_eq!(store.insert_messages(vec![first]).await.unwrap(), vec![InsertOutcome::Created]);
    let again = init(USER, "wfr_a", 1_001, b"other");
    assert_eq!(store.insert_messages(vec![again]).await.unwrap(), vec![InsertOutcome::RunExists]);
    let run = store.get_run(USER, "wfr_a").await.unwrap().unwrap();
    assert_eq!((run.state, run.created_at, run.url.as_str()), (RunState::RunStarted, 1_000, WF_URL));
    assert_eq!((run.config.retries, run.step_count, run.step_bytes), (Some(1), 1, 7));
    assert!(store.get_run(OTHER, "wfr_a").await.unwrap().is_none(), "another user's run is invisible");
    // Another user may use the same run id for a run of its own.
    assert_eq!(
        store.insert_messages(vec![init(OTHER, "wfr_a", 1_002, b"")]).await.unwrap(),
        vec![InsertOutcome::Created]
    );

    // An Init published again by the SDK replaces the configuration, keeping the payload.
    let mut replace = init(USER, "wfr_a", 1_003, b"payload");
    let run = replace.run.as_mut().unwrap();
    run.replace = true;
    run.config.retries = Some(0);
    assert_eq!(store.insert_messages(vec![replace]).await.unwrap(), vec![InsertOutcome::Created]);
    let store = reopen(backend, store, 2_000).await;
    let (run, steps) = store.run_records(USER, "wfr_a").await.unwrap().unwrap();
    assert_eq!(run.config.retries, Some(0));
    assert_eq!(steps.len(), 1, "the run keeps its one initial record");
    assert_eq!((steps[0].message_id.clone(), steps[0].body.as_ref()), (first_id.to_string(), &b"payload"[..]));
    store.shutdown().await.unwrap();
}

async fn steps_are_appended_in_order_and_sliced(backend: &mut impl Backend) {
    let store = open(backend, 1_000).await;
    let start = init(USER, "wfr_b", 1_000, b"in");
    let plan = step(USER, "wfr_b", 1_001, "step", b"one");
    let call = step(USER, "wfr_b", 1_001, "toCallback", b"call");
    let plan_id = plan.id;
    // The Init and the steps of one batch land in order.
    let outcomes = store.insert_messages(vec![start, plan, call]).await.unwrap();
    assert_eq!(outcomes, vec![InsertOutcome::Created; 3]);
    let (_, through_plan) = store.message_run(USER, plan_id, WantedRecords::ThroughOwn).await.unwrap().unwrap();
    let bodies: Vec<&[u8]> = through_plan.iter().map(|step| step.body.as_ref()).collect();
    assert_eq!(bodies, vec![&b"in"[..], b"one"], "a delivery sees nothing recorded after its own step");
    let (_, all) = store.run_records(USER, "wfr_b").await.unwrap().unwrap();
    let types: Vec<CallType> = all.iter().map(|step| step.call_type).collect();
    assert_eq!(types, vec![CallType::Step, CallType::Step, CallType::ToCallback]);
    let (_, initial) = store.message_run(USER, plan_id, WantedRecords::Initial).await.unwrap().unwrap();
    assert_eq!(initial.len(), 1, "the initial payload alone");
    assert!(store.message_run(OTHER, plan_id, WantedRecords::None).await.unwrap().is_none());

    let unknown = step(USER, "wfr_none", 1_002, "step", b"x");
    let foreign = step(OTHER, "wfr_b", 1_002, "step", b"x");
    let outcomes = store.insert_messages(vec![unknown, foreign]).await.unwrap();
    assert_eq!(outcomes, vec![InsertOutcome::RunNotActive; 2]);
    assert!(store.run_records(OTHER, "wfr_b").await.unwrap().is_none());
    store.shutdown().await.unwrap();
}

async fn ending_a_run_cancels_what_is_left(backend: &mut impl Backend) {
    let store = open(backend, 1_000).await;
    let start = init(USER, "wfr_c", 1_000, b"in");
    let mut later = step(USER, "wfr_c", 1_000, "step", b"later");
    later.due_at = 1_001;
    let (start_id, later_id) = (start.id, later.id);
    store.insert_messages(vec![start, later]).await.unwrap();
    // The Init's delivery is running: the success it reports must not cancel it.
    let running = store.claim_due(1_000, 1).await;
    assert_eq!(running[0].id, start_id);
    let end = RunEnd::Success { response: Bytes::from_static(b"\"done\"") };
    assert_eq!(store.end_run(OTHER, "wfr_c", end.clone(), 1_500).await.unwrap(), RunEndOutcome::NotFound);
    assert_eq!(store.end_run(USER, "wfr_c", end.clone(), 1_500).await.unwrap(), RunEndOutcome::Ended);
    assert_eq!(
        store.end_run(USER, "wfr_c", end, 1_600).await.unwrap(),
        RunEndOutcome::AlreadyEnded(RunState::RunSuccess)
    );
    assert_eq!(store.get_message(USER, later_id).await.unwrap().unwrap().state, MessageState::Canceled);
    assert_eq!(store.get_message(USER, start_id).await.unwrap().unwrap().state, MessageState::Pending);
    let run = store.get_run(USER, "wfr_c").await.unwrap().unwrap();
    assert_eq!((run.state, run.completed_at), (RunState::RunSuccess, Some(1_500)));
    assert_eq!(run.response.as_deref(), Some(&b"\"done\""[..]));
    let outcomes = store.insert_messages(vec![step(USER, "wfr_c", 1_700, "step", b"late")]).await.unwrap();
    assert_eq!(outcomes, vec![InsertOutcome::RunNotActive], "an ended run takes no more steps");
    // Its id may start another run, listed beside the first.
    let outcomes = store.insert_messages(vec![init(USER, "wfr_c", 1_800, b"again")]).await.unwrap();
    assert_eq!(outcomes, vec![InsertOutcome::Created]);
    let (run, steps) = store.run_records(USER, "wfr_c").await.unwrap().unwrap();
    assert_eq!((run.state, run.created_at, steps.len()), (RunState::RunStarted, 1_800, 1));
    let same_id = RunFilter { run_ids: vec!["wfr_c".into()], ..RunFilter::default() };
    let listed = store.list_runs(USER, &same_id, &page(10)).await.unwrap();
    let states: Vec<RunState> = listed.items.iter().map(|run| run.run.state).collect();
    assert_eq!(states, vec![RunState::RunStarted, RunState::RunSuccess]);
    assert_eq!(listed.items[1].pending.len(), 0, "the ended run shows nothing of the new one's messages");

    // Cancelling selects started runs only, by URL prefix or id.
    for id in ["wfr_d", "wfr_e"] {
        store.insert_messages(vec![init(USER, id, 2_000, b"")]).await.unwrap();
    }
    let by_url = RunFilter { urls: vec!["http://127.0.0.1:1/work".into()], ..RunFilter::default() };
    assert_eq!(store.cancel_runs(OTHER, by_url.clone(), None, 2_100).await.unwrap(), 0);
    assert_eq!(store.cancel_runs(USER, by_url.clone(), Some(1), 2_100).await.unwrap(), 1);
    assert_eq!(store.cancel_runs(USER, by_url, None, 2_100).await.unwrap(), 2, "the rest, wfr_c's second run included");
    let exact = RunFilter { urls: vec!["http://127.0.0.1:1/work".into()], url_exact: true, ..RunFilter::default() };
    assert_eq!(store.cancel_runs(USER, exact, None, 2_100).await.unwrap(), 0);
    let run = store.get_run(USER, "wfr_e").await.unwrap().unwrap();
    assert_eq!(run.state, RunState::RunCanceled);
    store.shutdown().await.unwrap();
}

async fn a_failed_step_fails_its_run(backend: &mut impl Backend) {
    let store = open(backend, 1_000).await;
    let start = init(USER, "wfr_f", 1_000, b"in");
    let parallel = step(USER, "wfr_f", 1_000, "step", b"branch");
    let parallel_id = parallel.id;
    store.insert_messages(vec![start]).await.unwrap();
    let claimed = store.claim_due(1_000, 1).await;
    store.insert_messages(vec![parallel]).await.unwrap();
    let mut failure = step(USER, "wfr_f", 1_100, "failureCall", b"{}");
    failure.spec.origin = tern_core::Origin::FailureCallback { source: claimed[0].id };
    let mut failed = outcome(Arc::clone(&claimed[0]), 1_100, 500, NextStep::Failed { dlq_id: "dlq_f".into() });
    failed.failure_callback = Some(failure);
    store.record_attempt_outcome(failed).await.unwrap();
    let run = store.get_run(USER, "wfr_f").await.unwrap().unwrap();
    assert_eq!((run.state, run.dlq_id.as_deref()), (RunState::RunFailed, Some("dlq_f")));
    assert_eq!(store.get_message(USER, parallel_id).await.unwrap().unwrap().state, MessageState::Canceled);
    let (_, steps) = store.run_records(USER, "wfr_f").await.unwrap().unwrap();
    assert_eq!(steps.len(), 2, "the failure callback is stored, not recorded as a step");
    let listed = store.list_runs(USER, &RunFilter::default(), &page(10)).await.unwrap();
    let pending = &listed.items[0].pending;
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].message_id, pending[0].state), (claimed[0].id, MessageState::Failed));
    assert_eq!(pending[0].errors.len(), 1);
    let failure = listed.items[0].failure_callback.as_ref().expect("the failure callback is listed with its run");
    assert_eq!(failure.state, MessageState::Pending);
    store.shutdown().await.unwrap();
}

async fn runs_are_listed_with_their_steps(backend: &mut impl Backend) {
    let store = open(backend, 1_000).await;
    for (index, id) in ["wfr_g1", "wfr_g2", "wfr_g3"].into_iter().enumerate() {
        store.insert_messages(vec![init(USER, id, 5_000 + index as i64, b"payload")]).await.unwrap();
    }
    store.insert_messages(vec![step(USER, "wfr_g3", 5_010, "step", b"{\"stepId\":1}")]).await.unwrap();
    let first = store.list_runs(USER, &RunFilter::default(), &page(2)).await.unwrap();
    let ids: Vec<&str> = first.items.iter().map(|run| run.run.run_id.as_str()).collect();
    assert_eq!(ids, vec!["wfr_g3", "wfr_g2"], "latest first");
    assert_eq!(first.items[0].steps.len(), 2);
    assert_eq!(first.items[0].pending.len(), 2, "neither message has been delivered");
    let mut next = page(2);
    next.cursor = first.cursor.clone();
    let rest = store.list_runs(USER, &RunFilter::default(), &next).await.unwrap();
    assert!(rest.items.iter().any(|run| run.run.run_id == "wfr_g1"));
    let one = RunFilter { run_ids: vec!["wfr_g2".into()], ..RunFilter::default() };
    assert_eq!(store.list_runs(USER, &one, &page(10)).await.unwrap().items.len(), 1);
    let recorded =
        store.list_runs(USER, &RunFilter::default(), &page(1)).await.unwrap().items[0].steps[1].message_id.clone();
    let by_host =
        RunFilter { hosts: vec!["127.0.0.1".into()], paths: vec!["/workflow".into()], ..RunFilter::default() };
    assert_eq!(store.list_runs(USER, &by_host, &page(10)).await.unwrap().items.len(), 3);
    let elsewhere = RunFilter { paths: vec!["/elsewhere".into()], ..RunFilter::default() };
    assert!(store.list_runs(USER, &elsewhere, &page(10)).await.unwrap().items.is_empty());
    let by_message = RunFilter { message_ids: vec![recorded], ..RunFilter::default() };
    let listed = store.list_runs(USER, &by_message, &page(10)).await.unwrap();
    assert_eq!(listed.items.iter().map(|run| run.run.run_id.as_str()).collect::<Vec<_>>(), ["wfr_g3"]);
    let started = RunFilter { states: vec![RunState::RunSuccess], ..RunFilter::default() };
    let listed = store.list_runs(USER, &started, &page(10)).await.unwrap();
    assert!(listed.items.iter().all(|run| run.run.state == RunState::RunSuccess));
    assert!(store.list_runs(OTHER, &one, &page(10)).await.unwrap().items.is_empty());
    let mut small = page(10);
    small.max_bytes = 1;
    let listed = store.list_runs(USER, &RunFilter::default(), &small).await.unwrap();
    assert_eq!(listed.items.len(), 1, "a page ends by size, after at least one run");
    assert!(listed.cursor.is_some());
    store.shutdown().await.unwrap();
}

async fn an_invoked_run_replies_to_its_invoker(backend: &mut impl Backend) {
    let store = open(backend, 1_000).await;
    store.insert_messages(vec![init(USER, "wfr_parent", 1_000, b"")]).await.unwrap();
    let reply = step(USER, "wfr_parent", 1_000, "step", b"").spec;
    let invoker = |step_id: u32| RunInvoker {
        run_id: "wfr_parent".into(),
        view: r#"{"workflowRunId":"wfr_parent"}"#.into(),
        step: format!(r#"{{"stepId":{step_id},"stepName":"invoke","stepType":"Invoke","concurrent":1}}"#),
        invoked: r#"{"invokedWorkflowRunId":"wfr_child"}"#.into(),
        reply: reply.clone(),
    };
    for (child, step_id) in [("wfr_child", 1), ("wfr_failing_child", 2)] {
        let mut start = init(USER, child, 1_100, b"child payload");
        start.run.as_mut().unwrap().invoker = Some(invoker(step_id));
        store.insert_messages(vec![start]).await.unwrap();
    }
    let end = RunEnd::Success { response: Bytes::from_static(b"\"child result\"") };
    assert_eq!(store.end_run(USER, "wfr_child", end, 1_200).await.unwrap(), RunEndOutcome::Ended);
    let failing = store.claim_due(1_200, 10).await;
    let failing =
        failing.into_iter().find(|m| m.spec.workflow.as_ref().unwrap().run_id == "wfr_failing_child").unwrap();
    store
        .record_attempt_outcome(outcome(failing, 1_300, 500, NextStep::Failed { dlq_id: "dlq_child".into() }))
        .await
        .unwrap();

    let (_, steps) = store.run_records(USER, "wfr_parent").await.unwrap().unwrap();
    let replies: Vec<serde_json::Value> = steps[1..].iter().map(|s| serde_json::from_slice(&s.body).unwrap()).collect();
    assert_eq!(replies.len(), 2, "each child's end publishes one step to its invoker: {replies:?}");
    let out =
        |reply: &serde_json::Value| serde_json::from_str::<serde_json::Value>(reply["out"].as_str().unwrap()).unwrap();
    assert_eq!(replies[0]["stepId"], 1);
    assert_eq!(
        out(&replies[0]),
        serde_json::json!({"body": "\"child result\"", "isFailed": false, "isCanceled": false})
    );
    assert_eq!(replies[1]["stepId"], 2);
    assert_eq!(out(&replies[1]), serde_json::json!({"isFailed": true, "isCanceled": false}));
    // A child that ends after its invoker ended: the invoker's records still show how it ended.
    let mut late = init(USER, "wfr_late_child", 1_400, b"");
    late.run.as_mut().unwrap().invoker = Some(invoker(3));
    store.insert_messages(vec![late]).await.unwrap();
    assert_eq!(store.end_run(USER, "wfr_parent", RunEnd::Canceled, 1_500).await.unwrap(), RunEndOutcome::Ended);
    let end = RunEnd::Success { response: Bytes::from_static(b"late") };
    assert_eq!(store.end_run(USER, "wfr_late_child", end, 1_600).await.unwrap(), RunEndOutcome::Ended);
    let (parent, steps) = store.run_records(USER, "wfr_parent").await.unwrap().unwrap();
    assert_eq!(parent.state, RunState::RunCanceled);
    let last: serde_json::Value = serde_json::from_slice(&steps.last().unwrap().body).unwrap();
    assert_eq!(last["stepId"], 3, "the late reply is recorded: {last}");
    let child = RunFilter { run_ids: vec!["wfr_child".into()], ..Default::default() };
    let listed = store.list_runs(USER, &child, &page(1)).await.unwrap();
    assert_eq!(listed.items[0].run.invoker.as_deref(), Some(r#"{"workflowRunId":"wfr_parent"}"#));
    store.shutdown().await.unwrap();
}

/// A failed run with an initial payload and two steps, the second of which failed for good:
/// returns the failed message and its DLQ entry.
async fn failed_run(store: &TestStore, run_id: &str, at: i64) -> (Arc<Message>, String) {
    store.insert_messages(vec![init(USER, run_id, at, b"initial")]).await.unwrap();
    let init_message = store.claim_due(at, 1).await.remove(0);
    store.record_attempt_outcome(outcome(init_message, at, 200, NextStep::Delivered)).await.unwrap();
    store.insert_messages(vec![step(USER, run_id, at, "step", b"{\"stepId\":1}")]).await.unwrap();
    let failing = store.claim_due(at, 1).await.remove(0);
    let dlq_id = format!("dlq_{run_id}");
    store
        .record_attempt_outcome(outcome(Arc::clone(&failing), at, 500, NextStep::Failed { dlq_id: dlq_id.clone() }))
        .await
        .unwrap();
    (failing, dlq_id)
}

async fn a_failed_run_is_taken_up_by_a_new_run(backend: &mut impl Backend) {
    let store = open(backend, 1_000).await;
    for (old, new, resume) in [("wfr_h", "wfr_h_resumed", true), ("wfr_i", "wfr_i_restarted", false)] {
        let (_, dlq_id) = failed_run(&store, old, 1_000).await;
        let failed = store.failed_run(USER, &dlq_id).await.unwrap().unwrap();
        assert_eq!(failed.run.run_id, old);
        assert!(failed.in_dlq);
        assert_eq!(failed.failed_spec.as_ref().map(|spec| spec.url.as_str()), Some(WF_URL));
        assert!(store.failed_run(OTHER, &dlq_id).await.unwrap().is_none());
        // The Init's body is the store's to copy: none is given.
        let mut again = init(USER, new, 2_000, b"");
        again.run.as_mut().unwrap().continues = Some(Continuation { dlq_id: dlq_id.clone(), resume });
        let again_id = again.id;
        assert_eq!(store.insert_messages(vec![again]).await.unwrap(), vec![InsertOutcome::Created]);
        assert!(store.get_dlq(USER, &dlq_id).await.unwrap().is_none(), "the entry left the DLQ");
        let (_, steps) = store.message_run(USER, again_id, WantedRecords::ThroughOwn).await.unwrap().unwrap();
        let bodies: Vec<&[u8]> = steps.iter().map(|step| step.body.as_ref()).collect();
        if resume {
            assert_eq!(
                bodies,
                vec![&b"initial"[..], b"{\"stepId\":1}"],
                "the failed step again, after the initial payload"
            );
            assert_eq!(steps[1].message_id, again_id.to_string());
        } else {
            assert_eq!(bodies, vec![&b"initial"[..]], "the initial payload alone");
        }
        let mut twice = init(USER, &format!("{new}_twice"), 2_000, b"");
        twice.run.as_mut().unwrap().continues = Some(Continuation { dlq_id: dlq_id.clone(), resume });
        assert_eq!(store.insert_messages(vec![twice]).await.unwrap(), vec![InsertOutcome::DlqEntryGone]);
    }
    store.shutdown().await.unwrap();
}

async fn ended_runs_go_with_their_logs(backend: &mut impl Backend) {
    let store = open(backend, 1_000).await;
    store.insert_messages(vec![init(USER, "wfr_done", 1_000, b"")]).await.unwrap();
    let end = RunEnd::Success { response: Bytes::new() };
    store.end_run(USER, "wfr_done", end, 1_000).await.unwrap();
    store.insert_messages(vec![init(USER, "wfr_going", 1_000, b"")]).await.unwrap();
    let (_, dlq_id) = failed_run(&store, "wfr_dead", 1_000).await;
    let retention = Retention { logs: Duration::from_millis(1_000), dlq: Duration::from_millis(5_000) };
    assert_eq!(store.purge(3_000, retention).await.unwrap().runs, 1);
    assert!(store.get_run(USER, "wfr_done").await.unwrap().is_none());
    assert!(store.get_run(USER, "wfr_going").await.unwrap().is_some(), "a started run stays, however old");
    assert!(store.failed_run(USER, &dlq_id).await.unwrap().is_some(), "its DLQ entry may still resume it");
    assert_eq!(store.purge(7_000, retention).await.unwrap().runs, 1, "once the entry expired, the failed run goes");
    assert!(store.get_run(USER, "wfr_dead").await.unwrap().is_none());
    store.shutdown().await.unwrap();
}

async fn a_run_id_used_again_starts_a_run_apart(backend: &mut impl Backend) {
    let store = open(backend, 1_000).await;
    store.insert_messages(vec![init(USER, "wfr_same", 1_000, b"first")]).await.unwrap();
    let first = store.claim_due(1_000, 1).await.remove(0);
    // The first run completes while its last delivery is still waiting for its answer.
    let end = RunEnd::Success { response: Bytes::new() };
    assert_eq!(store.end_run(USER, "wfr_same", end, 1_100).await.unwrap(), RunEndOutcome::Ended);
    store.insert_messages(vec![init(USER, "wfr_same", 1_200, b"second")]).await.unwrap();
    // That delivery then fails for good, and would call back into its run.
    let mut callback = step(USER, "wfr_same", 1_300, "fromCallback", b"{}");
    callback.spec.origin = tern_core::Origin::Callback { source: first.id };
    let mut failed = outcome(Arc::clone(&first), 1_300, 500, NextStep::Failed { dlq_id: "dlq_same".into() });
    failed.callback = Some(callback);
    store.record_attempt_outcome(failed).await.unwrap();
    let (run, steps) = store.run_records(USER, "wfr_same").await.unwrap().unwrap();
    assert_eq!(run.state, RunState::RunStarted, "the second run is not failed by the first's message");
    assert_eq!(steps.len(), 1, "nor does it take the first's callback");
    assert_eq!(steps[0].body.as_ref(), b"second");
    let (first_run, first_steps) = store.message_run(USER, first.id, WantedRecords::ThroughOwn).await.unwrap().unwrap();
    assert_eq!((first_run.state, first_steps[0].body.as_ref()), (RunState::RunSuccess, &b"first"[..]));

    // A run that failed with a failure callback, its id then used again: calling its failure
    // function again reaches the failed run.
    store.insert_messages(vec![init(USER, "wfr_again", 2_000, b"")]).await.unwrap();
    let failing =
        store.claim_due(2_000, 10).await.into_iter().find(|m| m.spec.workflow.as_ref().unwrap().run_id == "wfr_again");
    let failing = failing.unwrap();
    let mut failure = step(USER, "wfr_again", 2_100, "failureCall", b"{\"status\":500}");
    failure.spec.origin = tern_core::Origin::FailureCallback { source: failing.id };
    let mut failed = outcome(Arc::clone(&failing), 2_100, 500, NextStep::Failed { dlq_id: "dlq_again".into() });
    failed.failure_callback = Some(failure);
    store.record_attempt_outcome(failed).await.unwrap();
    store.insert_messages(vec![init(USER, "wfr_again", 2_200, b"")]).await.unwrap();
    let before = store.failed_run(USER, "dlq_again").await.unwrap().unwrap().failure_callback.unwrap().message_id;
    let called = store.call_failure_function_again(USER, "dlq_again", 2_300).await.unwrap();
    assert_eq!(called, Some(("wfr_again".to_string(), 2_000)), "the failed run's id and creation time");
    let after = store.failed_run(USER, "dlq_again").await.unwrap().unwrap().failure_callback.unwrap();
    assert_ne!(after.message_id, before, "the failed run's failure callback is the new one");
    let again = store.get_message(USER, after.message_id).await.unwrap().unwrap();
    assert_eq!(again.body.as_ref(), b"{\"status\":500}", "its body copied");
    let again_filter = RunFilter { run_ids: vec!["wfr_again".into()], ..Default::default() };
    let running = store.list_runs(USER, &again_filter, &page(10)).await.unwrap();
    assert!(running.items[0].failure_callback.is_none(), "the new run with the id has none");
    assert_eq!(store.call_failure_function_again(OTHER, "dlq_again", 2_300).await.unwrap(), None);
    store.shutdown().await.unwrap();
}

async fn a_run_refuses_what_it_cannot_take_and_so_does_its_insert(backend: &mut impl Backend) {
    let store = open(backend, 1_000).await;
    store.insert_messages(vec![init(USER, "wfr_small", 1_000, b"12345")]).await.unwrap();
    let limited = |body: &'static [u8], max_steps: usize, max_bytes: usize| {
        let mut message = step(USER, "wfr_small", 1_000, "step", body);
        message.run_limits = Some(RunLimits { max_steps, max_bytes });
        message
    };
    assert_eq!(store.insert_messages(vec![limited(b"123", 2, 8)]).await.unwrap(), vec![InsertOutcome::Created]);
    assert_eq!(store.insert_messages(vec![limited(b"1", 2, 100)]).await.unwrap(), vec![InsertOutcome::RunStepLimit]);
    assert_eq!(store.insert_messages(vec![limited(b"1", 10, 8)]).await.unwrap(), vec![InsertOutcome::RunByteLimit]);

    // A publish or batch stores all of its messages or none.
    let plain = new_message(USER, "http://127.0.0.1:1/plain", 1_000, 1_000, &[]);
    let plain_id = plain.id;
    let outcomes = store.insert_messages(vec![plain, step(USER, "wfr_unknown", 1_000, "step", b"x")]).await.unwrap();
    assert!(outcomes[1].refuses_insert(), "{outcomes:?}");
    assert!(store.get_message(USER, plain_id).await.unwrap().is_none(), "the plain message was not stored either");
    let (_, steps) = store.run_records(USER, "wfr_small").await.unwrap().unwrap();
    assert_eq!(steps.len(), 2);
    store.shutdown().await.unwrap();
}
