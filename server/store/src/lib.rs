//! Citadel's storage: where player files live and the small amount of data
//! servers share. Holds the heavy storage clients (S3, MongoDB, SQLite), so
//! that a change to the game server's own code rebuilds none of them.
//!
//! # Layout
//! - [`blob`]: player file storage: the `BlobStore` trait and the
//!   filesystem backend (the embedded default).
//! - [`s3`]: the S3 backend of the blob store.
//! - [`world`]: data shared between servers, as role traits (locks, server
//!   status, players, scores and the map, raids, clans, audit) that
//!   together make a `WorldStore`; SQLite (embedded) and MongoDB backends.
//! - [`decorate`]: decorators (the server's timing) generated from the
//!   traits' declarations.
//!
//! Each trait has one conformance suite (`tests/blob_conformance.rs`,
//! `tests/world_conformance.rs`) that every backend passes.

pub mod decorate;

pub mod blob;
pub mod s3;
pub mod world;
