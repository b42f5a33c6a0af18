//! The one place Rust errors become Elixir terms.
//!
//! Bare atoms: `:not_found`, `:closed`, `:invalid_json`, `:invalid_session_description`,
//! `:invalid_track`, `:too_large`, `:buffer_full`, `:not_owner`.
//! Tagged: `{:invalid_argument, name}`, `{:invalid_option, name}`, `{:invalid_sdp, detail}`,
//! `{:invalid_candidate, detail}`, `{:invalid_state, detail}`, `{:invalid_codec, detail}`,
//! `{:runtime_unavailable, detail}`, `{:webrtc, detail}`.

use rustler::{Encoder, Env, Term};
use webrtc::error::Error as WebrtcError;

use crate::atoms;

/// Every failure the native core reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No object with that id exists in this Specter instance.
    NotFound,
    /// The object was closed.
    Closed,
    /// An argument had the wrong type or shape; carries the argument's name.
    InvalidArgument(&'static str),
    /// An option was unknown or had a bad value; carries the option's name.
    InvalidOption(String),
    /// A JSON string did not parse.
    InvalidJson,
    /// JSON parsed but is not a session description (`type` + `sdp`).
    InvalidSessionDescription,
    /// SDP that webrtc-rs could not parse or apply.
    InvalidSdp(String),
    /// An ICE candidate that could not be parsed or applied.
    InvalidCandidate(String),
    /// The track id is not a track of this Specter instance.
    InvalidTrack,
    /// The operation is not valid in the connection's current state.
    InvalidState(String),
    /// A codec capability that webrtc-rs cannot use.
    InvalidCodec(String),
    /// An input over the documented size limit.
    TooLarge,
    /// The send buffer is full.
    BufferFull,
    /// Only the owner may hand the object to another process.
    NotOwner,
    /// The async runtime could not be started.
    RuntimeUnavailable(String),
    /// Any other webrtc-rs error, with its message.
    Webrtc(String),
}

impl Error {
    /// Classifies a webrtc-rs error.
    pub fn from_webrtc(err: &WebrtcError) -> Self {
        let msg = err.to_string();
        match err {
            WebrtcError::ErrConnectionClosed
            | WebrtcError::ErrClosed
            | WebrtcError::ErrAlreadyClosed
            | WebrtcError::ErrDataChannelClosed => Error::Closed,
            WebrtcError::ErrIncorrectSignalingState
            | WebrtcError::InvalidStateError
            | WebrtcError::ErrSignalingStateCannotRollback
            | WebrtcError::ErrSignalingStateProposedTransitionInvalid(_)
            | WebrtcError::ErrNoRemoteDescription => Error::InvalidState(msg),
            WebrtcError::SdpInvalidSyntax(_)
            | WebrtcError::SdpInvalidValue(_)
            | WebrtcError::SdpEmptyTimeDescription
            | WebrtcError::OtherSdpErr(_)
            | WebrtcError::ErrSessionDescriptionNoFingerprint
            | WebrtcError::ErrSessionDescriptionInvalidFingerprint
            | WebrtcError::ErrSessionDescriptionConflictingFingerprints
            | WebrtcError::ErrSessionDescriptionMissingIceUfrag
            | WebrtcError::ErrSessionDescriptionMissingIcePwd
            | WebrtcError::ErrSessionDescriptionConflictingIceUfrag
            | WebrtcError::ErrSessionDescriptionConflictingIcePwd => Error::InvalidSdp(msg),
            _ => Error::Webrtc(msg),
        }
    }

    /// Like [`Error::from_webrtc`], but a generic failure of a candidate operation is a bad
    /// candidate.
    pub fn from_candidate(err: &WebrtcError) -> Self {
        match Self::from_webrtc(err) {
            Error::Webrtc(msg) => Error::InvalidCandidate(msg),
            other => other,
        }
    }
}

impl From<specter_core::signalling::SignallingError> for Error {
    fn from(err: specter_core::signalling::SignallingError) -> Self {
        use specter_core::signalling::SignallingError as S;
        match err {
            S::InvalidSessionDescription => Error::InvalidSessionDescription,
            S::InvalidSdp(d) => Error::InvalidSdp(d),
            S::InvalidCandidate(d) => Error::InvalidCandidate(d),
        }
    }
}

impl From<specter_core::registry::Missing> for Error {
    fn from(m: specter_core::registry::Missing) -> Self {
        match m {
            specter_core::registry::Missing::NotFound => Error::NotFound,
            specter_core::registry::Missing::Closed => Error::Closed,
        }
    }
}

impl From<WebrtcError> for Error {
    fn from(err: WebrtcError) -> Self {
        Error::from_webrtc(&err)
    }
}

impl Encoder for Error {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match self {
            Error::NotFound => atoms::not_found().encode(env),
            Error::Closed => atoms::closed().encode(env),
            Error::InvalidJson => atoms::invalid_json().encode(env),
            Error::InvalidSessionDescription => atoms::invalid_session_description().encode(env),
            Error::InvalidTrack => atoms::invalid_track().encode(env),
            Error::TooLarge => atoms::too_large().encode(env),
            Error::BufferFull => atoms::buffer_full().encode(env),
            Error::NotOwner => atoms::not_owner().encode(env),
            Error::InvalidArgument(name) => {
                let name = rustler::Atom::from_str(env, name)
                    .map(|a| a.encode(env))
                    .unwrap_or_else(|_| name.encode(env));
                (atoms::invalid_argument(), name).encode(env)
            }
            Error::InvalidOption(name) => {
                let name = rustler::Atom::from_str(env, name)
                    .map(|a| a.encode(env))
                    .unwrap_or_else(|_| name.encode(env));
                (atoms::invalid_option(), name).encode(env)
            }
            Error::InvalidSdp(d) => (atoms::invalid_sdp(), d.as_str()).encode(env),
            Error::InvalidCandidate(d) => (atoms::invalid_candidate(), d.as_str()).encode(env),
            Error::InvalidState(d) => (atoms::invalid_state(), d.as_str()).encode(env),
            Error::InvalidCodec(d) => (atoms::invalid_codec(), d.as_str()).encode(env),
            Error::RuntimeUnavailable(d) => (atoms::runtime_unavailable(), d.as_str()).encode(env),
            Error::Webrtc(d) => (atoms::webrtc(), d.as_str()).encode(env),
        }
    }
}

/// `{:error, reason}`.
pub fn error_tuple<'a>(env: Env<'a>, err: &Error) -> Term<'a> {
    (atoms::error(), err).encode(env)
}

/// The result of a NIF that answers synchronously: `:ok`-style terms or `{:error, reason}`.
pub type NifResult<T> = Result<T, Error>;

/// Encodes `Ok(term)` as the term and `Err(e)` as `{:error, e}`.
pub fn encode_result<'a, T: Encoder>(env: Env<'a>, res: NifResult<T>) -> Term<'a> {
    match res {
        Ok(v) => v.encode(env),
        Err(e) => error_tuple(env, &e),
    }
}
