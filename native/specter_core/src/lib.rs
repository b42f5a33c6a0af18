//! The parts of Specter's native core that never touch the Erlang VM, so `cargo test` can
//! exercise them on their own: the per-connection webrtc runtime, and the parsers of what
//! crosses the NIF boundary.

pub mod media;
pub mod recording;
pub mod registry;
pub mod rtcp;
pub mod runtime;
pub mod signalling;
