//! File descriptors: the open-file limit is raised as far as the system allows, then shared
//! out so that client connections can never take the descriptors deliveries and the store
//! need.

use crate::config::MaxConnections;

/// Descriptors kept for everything but connections and deliveries: the store (a writer, the
/// readers and the WAL), the runtime, standard streams, the listener, the connection accepted
/// while the listener makes room for it.
pub const RESERVED: u64 = 64;

/// Descriptors per concurrent delivery: its connection, and a DNS lookup's socket or an idle
/// pooled connection.
pub const PER_DELIVERY: u64 = 2;

/// The most connections `auto` allows, whatever the open-file limit: each costs memory too.
pub const AUTO_MAX_CONNECTIONS: u64 = 10_000;

/// Raises the soft open-file limit to the hard one and returns the limit in force (`None` where
/// it cannot be read: nothing is then derived from it).
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current?;
    // Where the hard limit is unlimited, stay within what the kernel takes for one process.
    let wanted = limit.maximum.unwrap_or(1 << 20);
    if wanted <= current {
        tracing::info!(limit = current, "open-file limit");
        return Some(current);
    }
    match setrlimit(Resource::Nofile, rustix::process::Rlimit { current: Some(wanted), maximum: limit.maximum }) {
        Ok(()) => {
            tracing::info!(from = current, to = wanted, "open-file limit raised to the hard limit");
            Some(wanted)
        }
        Err(error) => {
            tracing::warn!(limit = current, hard = wanted, %error, "cannot raise the open-file limit");
            Some(current)
        }
    }
}

/// How descriptors are shared out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub max_connections: usize,
    pub max_concurrent_deliveries: usize,
    /// Set when the configured delivery concurrency was lowered to fit, saying why.
    pub lowered: Option<String>,
}

/// Shares `open_files` out between client connections and deliveries. `auto` connections get
/// what deliveries leave, but at least half of it (deliveries are lowered to fit then); a fixed
/// number is kept if at least one delivery still fits, and refused otherwise.
pub fn plan(open_files: Option<u64>, connections: MaxConnections, deliveries: usize) -> Result<Budget, String> {
    let Some(open_files) = open_files else {
        let max_connections = match connections {
            MaxConnections::Auto => AUTO_MAX_CONNECTIONS as usize,
            MaxConnections::Limit(n) => n,
        };
        return Ok(Budget { max_connections, max_concurrent_deliveries: deliveries, lowered: None });
    };
    let available = open_files.saturating_sub(RESERVED);
    let wanted = deliveries as u64 * PER_DELIVERY;
    let clients = match connections {
        MaxConnections::Limit(n) if n as u64 + PER_DELIVERY > available => {
            return Err(format!(
                "{n} connections leave no file descriptor for deliveries under the open-file limit of {open_files} \
                 (at most {} fit); raise the limit or lower server.max_connections",
                available.saturating_sub(PER_DELIVERY)
            ));
        }
        MaxConnections::Limit(n) => n as u64,
        MaxConnections::Auto if available < 2 * PER_DELIVERY => {
            return Err(format!("the open-file limit of {open_files} is too low to serve anything"));
        }
        MaxConnections::Auto => available.saturating_sub(wanted).max(available / 2).min(AUTO_MAX_CONNECTIONS),
    };
    let fitting = ((available - clients) / PER_DELIVERY) as usize;
    let max_concurrent_deliveries = deliveries.min(fitting);
    let lowered = (max_concurrent_deliveries < deliveries).then(|| {
        format!(
            "the open-file limit of {open_files} cannot hold {deliveries} concurrent deliveries and {clients} client \
             connections: delivery.max_concurrent is lowered to {max_concurrent_deliveries}; raise the limit \
             (ulimit -n, systemd's LimitNOFILE) for more"
        )
    });
    Ok(Budget { max_connections: clients as usize, max_concurrent_deliveries, lowered })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_leaves_deliveries_their_share() {
        let budget = plan(Some(20_000), MaxConnections::Auto, 1024).unwrap();
        assert_eq!((budget.max_connections, budget.max_concurrent_deliveries), (10_000, 1024));
        let budget = plan(Some(8192), MaxConnections::Auto, 1024).unwrap();
        assert_eq!((budget.max_connections, budget.max_concurrent_deliveries), (8192 - 64 - 2048, 1024));
        assert_eq!(budget.lowered, None);
    }

    #[test]
    fn a_low_limit_splits_and_lowers_deliveries() {
        let budget = plan(Some(1024), MaxConnections::Auto, 1024).unwrap();
        assert_eq!((budget.max_connections, budget.max_concurrent_deliveries), (480, 240));
        assert!(budget.lowered.unwrap().contains("lowered to 240"));
        let budget = plan(Some(256), MaxConnections::Limit(100), 1024).unwrap();
        assert_eq!((budget.max_connections, budget.max_concurrent_deliveries), (100, 46));
        let total = budget.max_connections as u64 + budget.max_concurrent_deliveries as u64 * PER_DELIVERY + RESERVED;
        assert!(total <= 256);
    }

    #[test]
    fn connections_that_leave_no_room_are_refused() {
        assert!(plan(Some(256), MaxConnections::Limit(191), 8).is_err());
        assert!(plan(Some(256), MaxConnections::Limit(190), 8).is_ok());
        assert!(plan(Some(66), MaxConnections::Auto, 8).is_err());
        let unknown = plan(None, MaxConnections::Auto, 8).unwrap();
        assert_eq!((unknown.max_connections, unknown.max_concurrent_deliveries), (10_000, 8));
    }
}
