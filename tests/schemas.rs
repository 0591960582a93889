//! placeholder until the docs exist
