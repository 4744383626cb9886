//! Benchmark support: a deterministic reference model and its encodings for FluxGate's engine,
//! cedar-policy and casbin, so that the three can be measured side by side and checked to agree
//! on every decision.

pub mod model;
pub mod peers;
