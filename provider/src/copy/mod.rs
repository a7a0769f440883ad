//! The copy engines and what they share. Nothing here knows about Pulumi.

pub mod connection;
pub mod filter;
pub mod journal;
pub mod progress;
pub mod s3;
pub mod sync;
