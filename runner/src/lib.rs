//! vmunit-runner library: configuration, command-line building, execution and classification of
//! guest test runs under QEMU, shared by the `vmunit-runner` binary and its integration tests.

pub mod app;
pub mod config;
pub mod environment;
pub mod execute;
pub mod guests;
pub mod outcome;
pub mod output;
pub mod qemu;
pub mod select;
pub mod standalone;
pub mod subtests;
pub mod symbolise;
pub mod workspace;
