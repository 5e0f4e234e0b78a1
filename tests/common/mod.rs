//! Test support for the integration tests: an in-process cluster
//! ([`cluster`]), the Milvus calls a scenario makes ([`calls`]), a handle on
//! one collection that fills, searches and checks it ([`collection`]), and the
//! brute-force oracle every search is checked against ([`oracle`]); nodes as
//! child processes of the binary ([`processes`]), HTTP and health probes
//! ([`probes`]), a TCP relay ([`relay`]),
//! JuiceFS volumes with a mount per node ([`juicefs`]) and hosts on a real
//! network whose links a test cuts ([`netns`]).

// Each test binary uses its own subset of these helpers.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod calls;
pub mod cluster;
pub mod collection;
pub mod juicefs;
pub mod netns;
pub mod oracle;
pub mod probes;
pub mod processes;
pub mod relay;

pub use calls::*;
pub use cluster::*;
pub(crate) use cluster::{on_both_databases, on_every_storage};
pub use collection::*;
pub use oracle::*;
pub use probes::*;
