//! A workflow run's records: admitting a message into its run, starting runs, recording steps.
