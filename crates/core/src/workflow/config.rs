//! The configuration a run's trigger fixes for every later message of the run (protocol §4.1,
//! `WF_TriggerOnConfig`): since the JS SDK sends retries, flow control, the failure callback,
//! the label and the user's headers only with the trigger, the server applies them to each step,
//! callback and failure callback. A message's own headers win, so that SDKs which still send
//! everything with every message (Python, the old qstash-js module) keep what they send.

use crate::headers::{HeaderList, strip_prefix_ignore_case};
use crate::message::{CallbackTarget, FlowControl};
use crate::options::PublishOptions;
use serde::{Deserialize, Serialize};

/// Forwarded headers that belong to one message, never to the run: the SDK-version marker
/// (callbacks must arrive without it), the unknown-SDK marker (forwarding it again would make
/// the SDK trigger the run again, forever), and the content type each message sets itself.
const NOT_INHERITED: &[&str] = &["upstash-workflow-sdk-version", "upstash-workflow-unknown-sdk", "content-type"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_control: Option<FlowControl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_callback: Option<CallbackTarget>,
    /// User headers (`Upstash-Forward-*`, prefix stripped).
    #[serde(default, skip_serializing_if = "HeaderList::is_empty")]
    pub forward: HeaderList,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

impl RunConfig {
    /// What the Init message of a run fixes for the run.
    pub fn from_trigger(options: &PublishOptions) -> Self {
        RunConfig {
            retries: options.retries,
            retry_delay: options.retry_delay.as_ref().map(|e| e.source().to_string()),
            flow_control: options.flow_control.clone(),
            failure_callback: options
                .failure_callback
                .clone()
                .map(|url| CallbackTarget { url, options: options.failure_callback_options.clone() }),
            forward: options
                .forward
                .iter()
                .filter(|(name, _)| !NOT_INHERITED.iter().any(|skip| name.eq_ignore_ascii_case(skip)))
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            labels: options.labels.clone().unwrap_or_default(),
        }
    }

    /// Fills in what `options` (a message continuing the run) does not say itself.
    pub fn apply(&self, options: &mut PublishOptions) {
        if options.retries.is_none() {
            options.retries = self.retries;
        }
        if options.retry_delay.is_none() {
            options.retry_delay =
                self.retry_delay.as_deref().and_then(|source| crate::retry::RetryDelayExpr::parse(source).ok());
        }
        if options.flow_control.is_none() {
            options.flow_control = self.flow_control.clone();
        }
        if options.failure_callback.is_none()
            && let Some(target) = &self.failure_callback
        {
            options.failure_callback = Some(target.url.clone());
            options.failure_callback_options = target.options.clone();
        }
        options.forward.add_defaults(&self.forward);
        if options.labels.is_none() && !self.labels.is_empty() {
            options.labels = Some(self.labels.clone());
        }
    }

    /// Replaces what `overrides` say (a DLQ resume's or restart's headers).
    pub fn override_with(&mut self, overrides: &PublishOptions) {
        let given = RunConfig::from_trigger(overrides);
        if given.retries.is_some() {
            self.retries = given.retries;
        }
        if given.retry_delay.is_some() {
            self.retry_delay = given.retry_delay;
        }
        if given.flow_control.is_some() {
            self.flow_control = given.flow_control;
        }
        if given.failure_callback.is_some() {
            self.failure_callback = given.failure_callback;
        }
        if overrides.labels.is_some() {
            self.labels = given.labels;
        }
        for (name, value) in given.forward.iter() {
            self.forward.remove(name);
            self.forward.push(name, value);
        }
    }

    /// The configuration for run `run_id` taken up from this one's (a DLQ resume or restart):
    /// its failure callback names the new run.
    pub fn for_run(&self, run_id: &str) -> RunConfig {
        let mut config = self.clone();
        if let Some(target) = config.failure_callback.as_mut() {
            for (name, value) in target.options.0.iter_mut() {
                if name.eq_ignore_ascii_case(super::RUN_ID_HEADER) {
                    *value = run_id.to_string();
                }
            }
        }
        config
    }

    /// The publish headers that give this configuration.
    pub fn header_lines(&self) -> HeaderList {
        let mut lines = HeaderList::new();
        if let Some(retries) = self.retries {
            lines.push("Upstash-Retries", retries.to_string());
        }
        if let Some(expression) = &self.retry_delay {
            lines.push("Upstash-Retry-Delay", expression.clone());
        }
        if let Some(flow) = &self.flow_control {
            lines.push("Upstash-Flow-Control-Key", flow.key.clone());
            lines.push("Upstash-Flow-Control-Value", flow_value(flow));
        }
        if let Some(target) = &self.failure_callback {
            lines.push("Upstash-Failure-Callback", target.url.clone());
            for (name, value) in target.options.iter() {
                let rest = strip_prefix_ignore_case(name, "Upstash-").unwrap_or(name);
                lines.push(format!("Upstash-Failure-Callback-{rest}"), value);
            }
        }
        for (name, value) in self.forward.iter() {
            lines.push(format!("Upstash-Forward-{name}"), value);
        }
        if !self.labels.is_empty() {
            lines.push("Upstash-Label", self.labels.join(","));
        }
        lines
    }

    /// Fills in the configuration of the callback a `context.call` message will produce (its
    /// `Upstash-Callback-*` options): the callback goes back to the workflow URL and continues
    /// the run, so it inherits like a step.
    pub fn apply_to_callback(&self, options: &mut PublishOptions) {
        if options.callback.is_none() {
            return;
        }
        let mut lines = self.header_lines();
        // A nested failure callback counts as given when its URL is: its options go with it.
        if options.callback_options.get("Upstash-Failure-Callback").is_some() {
            lines.0.retain(|(name, _)| strip_prefix_ignore_case(name, "Upstash-Failure-Callback").is_none());
        }
        options.callback_options.add_defaults(&lines);
    }
}

/// The `Upstash-Flow-Control-Value` that gives `flow` back.
fn flow_value(flow: &FlowControl) -> String {
    let mut parts = Vec::new();
    if let Some(parallelism) = flow.parallelism {
        parts.push(format!("parallelism={parallelism}"));
    }
    if let Some(rate) = flow.rate {
        parts.push(format!("rate={rate}"));
    }
    parts.push(format!("period={}s", flow.period_secs));
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(headers: &[(&str, &str)]) -> PublishOptions {
        PublishOptions::from_headers(headers.iter().copied(), true).unwrap()
    }

    fn trigger() -> RunConfig {
        RunConfig::from_trigger(&options(&[
            ("Upstash-Retries", "1"),
            ("Upstash-Retry-Delay", "1000"),
            ("Upstash-Flow-Control-Key", "k"),
            ("Upstash-Flow-Control-Value", "parallelism=2, rate=5, period=1m"),
            ("Upstash-Failure-Callback", "http://127.0.0.1:1/wf"),
            ("Upstash-Failure-Callback-Forward-Upstash-Workflow-Is-Failure", "true"),
            ("Upstash-Forward-X-User", "u"),
            ("Upstash-Forward-Upstash-Workflow-Sdk-Version", "1"),
            ("Upstash-Label", "nightly"),
            ("Content-Type", "application/json"),
        ]))
    }

    #[test]
    fn a_step_inherits_what_it_does_not_say() {
        let config = trigger();
        assert_eq!(config.forward.0, vec![("X-User".to_string(), "u".to_string())], "no SDK marker, no content type");
        let mut step = options(&[("Upstash-Retries", "0"), ("Upstash-Forward-X-Own", "o")]);
        config.apply(&mut step);
        assert_eq!(step.retries, Some(0), "the message's own setting wins");
        assert_eq!(step.retry_delay.as_ref().map(|e| e.source()), Some("1000"));
        assert_eq!(
            step.flow_control.as_ref().map(|f| (f.parallelism, f.rate, f.period_secs)),
            Some((Some(2), Some(5), 60))
        );
        assert_eq!(step.failure_callback.as_deref(), Some("http://127.0.0.1:1/wf"));
        assert_eq!(step.failure_callback_options.get("Upstash-Forward-Upstash-Workflow-Is-Failure"), Some("true"));
        assert_eq!((step.forward.get("x-own"), step.forward.get("x-user")), (Some("o"), Some("u")));
        assert_eq!(step.labels, Some(vec!["nightly".to_string()]));
    }

    #[test]
    fn a_run_taken_up_names_itself_in_its_failure_callback() {
        let config = RunConfig::from_trigger(&options(&[
            ("Upstash-Retries", "2"),
            ("Upstash-Failure-Callback", "http://127.0.0.1:1/wf"),
            ("Upstash-Failure-Callback-Workflow-Runid", "wfr_old"),
            ("Upstash-Forward-X-User", "u"),
        ]))
        .for_run("wfr_new");
        let again = PublishOptions::from_headers(config.header_lines().iter(), true).unwrap();
        assert_eq!(again.retries, Some(2));
        assert_eq!(again.failure_callback_options.get("Upstash-Workflow-Runid"), Some("wfr_new"));
        assert_eq!(again.forward.get("x-user"), Some("u"));
        assert_eq!(RunConfig::from_trigger(&again), config, "the lines give the configuration back");
    }

    #[test]
    fn a_call_passes_the_run_configuration_to_its_callback() {
        let config = trigger();
        let mut call = options(&[
            ("Upstash-Callback", "http://127.0.0.1:1/wf"),
            ("Upstash-Callback-Retries", "2"),
            ("Upstash-Forward-Call-Header", "c"),
        ]);
        config.apply_to_callback(&mut call);
        assert_eq!(call.retries, None, "the call itself keeps its own configuration");
        assert_eq!(call.forward.get("x-user"), None, "the third party sees only the call's headers");
        let callback = PublishOptions::from_headers(call.callback_options.iter(), true).unwrap();
        assert_eq!(callback.retries, Some(2));
        assert_eq!(callback.forward.get("x-user"), Some("u"));
        assert_eq!(callback.flow_control.map(|f| f.period_secs), Some(60));
        assert_eq!(callback.failure_callback.as_deref(), Some("http://127.0.0.1:1/wf"));
        assert_eq!(callback.labels, Some(vec!["nightly".to_string()]));
        let mut no_callback = options(&[]);
        config.apply_to_callback(&mut no_callback);
        assert!(no_callback.callback_options.is_empty());
    }
}
