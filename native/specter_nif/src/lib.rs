//! Specter's native core: webrtc-rs peer connections hosted in a rustler NIF.
//!
//! This file only wires modules; each module serves the Elixir module of the same concept.
//! Plumbing is written once: `nif` (arguments, answers), `error`, `atoms`, `mailbox`,
//! `specter_core::registry` (objects by id) and `instance` (one `Specter.init/1`).

mod atoms;
mod codec;
mod config;
mod data_channel;
mod error;
mod flow;
mod instance;
mod json;
mod mailbox;
mod media_file;
mod nif;
mod peer_connection;
mod rtcp;
mod rtp_transceiver;
mod specter;
mod track_local;
mod track_remote;

rustler::init!("Elixir.Specter.Native");
