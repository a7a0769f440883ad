//! stackmigrate: a Pulumi resource provider that moves data between stacks.
//!
//! Data flows one way: engine -> `server` (protocol) -> `resources` (what each resource
//! means) -> `copy` (engines, no Pulumi types) -> AWS clients.

pub mod config;
pub mod copy;
pub mod functions;
#[cfg(test)]
mod harness;
pub mod registry;
pub mod resources;
pub mod schema;
pub mod server;
pub mod stacks;
pub mod wire;
