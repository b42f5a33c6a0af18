//! Specter's native core: webrtc-rs peer connections hosted in a rustler NIF.
//!
//! This file only wires modules; each module serves the Elixir module of the same concept.

mod atoms;
mod config;
mod data_channel;
mod error;
mod flow;
mod json;
mod mailbox;
mod media_file;
mod peer_connection;
mod rtp_transceiver;
mod specter;
mod track_local;
mod track_local_static_rtp;
mod track_local_static_sample;
mod track_remote;

rustler::init!("Elixir.Specter.Native");
