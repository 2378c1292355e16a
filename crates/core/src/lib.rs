//! tern-core: the pure domain of tern — identifiers, durations, publish options, the retry
//! policy, callbacks, deduplication, redaction and request signing. No I/O lives here.

pub mod callback;
pub mod cron;
pub mod dedup;
pub mod destination;
pub mod duration;
pub mod error;
pub mod flow;
pub mod headers;
pub mod ids;
pub mod ip_ranges;
pub mod message;
pub mod options;
pub mod redact;
pub mod retry;
pub mod signing;
pub mod sizes;
pub mod workflow;

pub use error::Invalid;
pub use headers::HeaderList;
pub use ids::MessageId;
pub use message::{AttemptResponse, FlowControl, LogState, Message, MessageSpec, MessageState, Origin};
pub use options::{PublishLimits, PublishOptions};
