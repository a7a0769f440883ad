//! stackmigrate: a Pulumi resource provider that moves data between stacks.
//!
//! Data flows one way: engine -> `server` (protocol) -> `registry` (which resource or
//! function) -> `resources` and `functions` (what each one means) -> `connection` (the
//! AWS clients the provider's configuration makes) -> `copy` (the copy engines, no Pulumi
//! types, storage behind `copy::store`) and `runbook` (the steps around the copies).
//! Public are only the parts the plugin binary and the benchmark (`bench/engine`) use.

pub(crate) mod config;
pub mod connection;
pub mod copy;
pub(crate) mod functions;
#[cfg(test)]
mod harness;
pub mod registry;
pub(crate) mod resources;
pub(crate) mod runbook;
pub mod schema;
pub mod server;
pub(crate) mod stacks;
pub(crate) mod wire;
