//! The test harness: real database servers for the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
