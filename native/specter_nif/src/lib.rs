//! Specter's native core: webrtc-rs peer connections hosted in a rustler NIF.
//!
//! This file only wires modules; each module serves the Elixir module of the same concept.

mod atoms;
mod config;
mod data_channel;
mod error;
mod json;
mod mailbox;
mod peer_connection;
mod specter;
mod track_local_static_sample;

rustler::init!("Elixir.Specter.Native");
