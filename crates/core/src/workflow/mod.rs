//! Upstash Workflow (workflow-protocol.md): what the `Upstash-Workflow-*` headers of a publish
//! say about the run it belongs to, the configuration a run's trigger fixes for every later
//! message of the run, the run's states, and the bodies the server builds for step deliveries.

mod config;
mod invoke;
mod steps;

use crate::headers::HeaderList;
use serde::{Deserialize, Serialize};

pub use config::RunConfig;
pub use invoke::{InvokeEnvelope, InvokedEnd, invoke_result_body};
pub use steps::{StepRecord, StepView, failure_body, steps_body, wait_step_body};

/// The header naming a message's run.
pub const RUN_ID_HEADER: &str = "Upstash-Workflow-RunId";
/// The forwarded header whose presence tells the SDK "not the first invocation".
pub const SDK_VERSION_HEADER: &str = "Upstash-Workflow-Sdk-Version";

/// What a message of a run is for (`Upstash-Workflow-CallType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallType {
    /// A step result (or the initial payload) going to the workflow URL.
    #[default]
    Step,
    /// `context.call`: the request to the third party.
    ToCallback,
    /// The callback of that request, going back to the workflow URL.
    FromCallback,
    /// The failure callback of a run.
    FailureCall,
}

impl CallType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Step => "step",
            Self::ToCallback => "toCallback",
            Self::FromCallback => "fromCallback",
            Self::FailureCall => "failureCall",
        }
    }

    /// Unknown values are steps, as an absent header is.
    pub fn parse(value: &str) -> Self {
        match value.trim().to_ascii_lowercase().as_str() {
            "tocallback" => Self::ToCallback,
            "fromcallback" => Self::FromCallback,
            "failurecall" => Self::FailureCall,
            _ => Self::Step,
        }
    }

    /// Whether a message of this type goes to the workflow URL and continues the run, so that
    /// it inherits the run's configuration and its failure fails the run.
    pub fn continues_run(self) -> bool {
        matches!(self, Self::Step | Self::FromCallback)
    }

    pub fn code(self) -> i64 {
        match self {
            Self::Step => 0,
            Self::ToCallback => 1,
            Self::FromCallback => 2,
            Self::FailureCall => 3,
        }
    }

    pub fn from_code(code: i64) -> Self {
        match code {
            1 => Self::ToCallback,
            2 => Self::FromCallback,
            3 => Self::FailureCall,
            _ => Self::Step,
        }
    }
}

/// The state of a run, spelled as the logs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    RunStarted,
    RunSuccess,
    RunFailed,
    RunCanceled,
}

impl RunState {
    pub const ALL: [RunState; 4] = [Self::RunStarted, Self::RunSuccess, Self::RunFailed, Self::RunCanceled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunStarted => "RUN_STARTED",
            Self::RunSuccess => "RUN_SUCCESS",
            Self::RunFailed => "RUN_FAILED",
            Self::RunCanceled => "RUN_CANCELED",
        }
    }

    pub fn code(self) -> i64 {
        match self {
            Self::RunStarted => 0,
            Self::RunSuccess => 1,
            Self::RunFailed => 2,
            Self::RunCanceled => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.get(usize::try_from(code).ok()?).copied()
    }

    /// Parses a `state` filter (`RUN_CANCELLED` accepted for `RUN_CANCELED`).
    pub fn parse(value: &str) -> Option<Self> {
        let upper = value.trim().to_ascii_uppercase();
        if upper == "RUN_CANCELLED" {
            return Some(Self::RunCanceled);
        }
        Self::ALL.into_iter().find(|state| state.as_str() == upper)
    }
}

/// The state of a run's failure callback (`failureFunction.state`, `failureFunctionState`) for
/// the state of its message.
pub fn callback_state(state: crate::MessageState) -> &'static str {
    use crate::MessageState::*;
    match state {
        Delivered => "CALLBACK_SUCCESS",
        Failed => "CALLBACK_FAIL",
        Canceled => "CALLBACK_CANCELED",
        Pending | Retry | CancelRequested => "CALLBACK_INPROGRESS",
    }
}

/// The message states a `failureFunctionState` filter stands for (`CALLBACK_CANCELLED` too).
pub fn callback_states(name: &str) -> Option<Vec<crate::MessageState>> {
    let wanted = name.trim().to_ascii_uppercase().replace("CANCELLED", "CANCELED");
    let all = [
        crate::MessageState::Pending,
        crate::MessageState::Retry,
        crate::MessageState::CancelRequested,
        crate::MessageState::Delivered,
        crate::MessageState::Failed,
        crate::MessageState::Canceled,
    ];
    let states: Vec<_> = all.into_iter().filter(|state| callback_state(*state) == wanted).collect();
    (!states.is_empty()).then_some(states)
}

/// A message's place in a run, kept in its spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowLink {
    pub run_id: String,
    pub call_type: CallType,
    /// The message starts the run (`Upstash-Workflow-Init: true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
}

/// What the `Upstash-Workflow-*` headers of one publish say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowHeaders {
    pub run_id: Option<String>,
    pub init: bool,
    pub url: Option<String>,
    pub call_type: CallType,
    /// `Upstash-Workflow-Invoke: true`: the Init message of an invoked run, whose body is the
    /// invoker's envelope.
    pub invoke: bool,
    /// `Upstash-Workflow-Trigger-By-Sdk: true`: an Init the SDK publishes again for a run the
    /// server started (REST trigger, unknown SDK); it replaces the run's configuration.
    pub trigger_by_sdk: bool,
    pub feature_set: Vec<String>,
}

impl WorkflowHeaders {
    /// Reads the protocol headers a publish kept verbatim (its `passthrough`).
    pub fn parse(passthrough: &HeaderList) -> Self {
        let flag = |name: &str| passthrough.get(name).is_some_and(|value| value.trim().eq_ignore_ascii_case("true"));
        WorkflowHeaders {
            run_id: passthrough.get(RUN_ID_HEADER).map(str::trim).filter(|id| !id.is_empty()).map(str::to_string),
            init: flag("Upstash-Workflow-Init"),
            url: passthrough.get("Upstash-Workflow-Url").map(|url| url.trim().to_string()),
            call_type: passthrough.get("Upstash-Workflow-CallType").map(CallType::parse).unwrap_or_default(),
            invoke: flag("Upstash-Workflow-Invoke"),
            trigger_by_sdk: flag("Upstash-Workflow-Trigger-By-Sdk"),
            feature_set: passthrough
                .get("Upstash-Feature-Set")
                .map(|set| set.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect())
                .unwrap_or_default(),
        }
    }

    /// The message's link to its run, if it names one.
    pub fn link(&self) -> Option<WorkflowLink> {
        let run_id = self.run_id.clone()?;
        Some(WorkflowLink { run_id, call_type: self.call_type, init: self.starts_run() })
    }

    /// Whether the message starts its run: an Init that carries the initial payload, or (a run
    /// resumed from the DLQ at a call's callback) that callback again.
    pub fn starts_run(&self) -> bool {
        self.init && matches!(self.call_type, CallType::Step | CallType::FromCallback)
    }

    pub fn has_feature(&self, feature: &str) -> bool {
        self.feature_set.iter().any(|f| f.eq_ignore_ascii_case(feature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_protocol_headers_in_any_case() {
        let mut headers = HeaderList::new();
        headers.push("upstash-workflow-runid", " wfr_1 ");
        headers.push("Upstash-Workflow-Init", "TRUE");
        headers.push("Upstash-Workflow-Url", "http://127.0.0.1:1/wf");
        headers.push("Upstash-Feature-Set", "LazyFetch, InitialBody,WF_DetectTrigger");
        let parsed = WorkflowHeaders::parse(&headers);
        assert_eq!(parsed.run_id.as_deref(), Some("wfr_1"));
        assert!(parsed.init && parsed.has_feature("lazyfetch") && !parsed.has_feature("WF_NoDelete"));
        assert_eq!(parsed.link(), Some(WorkflowLink { run_id: "wfr_1".into(), call_type: CallType::Step, init: true }));
        assert_eq!(WorkflowHeaders::parse(&HeaderList::new()).link(), None);
    }

    #[test]
    fn call_types_and_states_round_trip() {
        for call_type in [CallType::Step, CallType::ToCallback, CallType::FromCallback, CallType::FailureCall] {
            assert_eq!(CallType::parse(call_type.as_str()), call_type);
            assert_eq!(CallType::from_code(call_type.code()), call_type);
        }
        for state in RunState::ALL {
            assert_eq!(RunState::from_code(state.code()), Some(state));
            assert_eq!(RunState::parse(state.as_str()), Some(state));
        }
        assert_eq!(RunState::parse("run_cancelled"), Some(RunState::RunCanceled));
        use crate::MessageState;
        assert_eq!(callback_states("callback_inprogress").unwrap().len(), 3);
        assert_eq!(callback_states("CALLBACK_CANCELLED"), Some(vec![MessageState::Canceled]));
        assert_eq!(callback_states("DONE"), None);
        assert_eq!(callback_state(MessageState::Failed), "CALLBACK_FAIL");
        assert_eq!(RunState::parse("DONE"), None);
    }
}
