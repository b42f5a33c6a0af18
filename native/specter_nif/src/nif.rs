//! NIF plumbing, written once: arguments decoded by type, and synchronous answers.
//!
//! A NIF takes `Arg<T>` for every argument a caller can get wrong. Decoding never fails at the
//! call (rustler would raise `ArgumentError`); the body asks for the value with `get()?` and a
//! term of the wrong shape becomes `{:error, {:invalid_argument, name}}`, in the order the
//! body asks. The body returns a `NifResult<T>`; `Answer` encodes `Ok(v)` as `v` itself and
//! `Err(e)` as `{:error, e}`:
//!
//! ```ignore
//! #[rustler::nif]
//! fn dc_close(specter: Arg<Specter>, dc: Arg<DcId>) -> Answer<Atom> {
//!     answer(|| { let h = lookup(specter, dc)?; h.close(); Ok(atoms::ok()) })
//! }
//! ```
//!
//! Operations that run on a connection's worker and answer with a message are submitted
//! through `peer_connection::worker::submit`.

use rustler::{Decoder, Encoder, Env, LocalPid, Term};

use crate::atoms;
use crate::error::{Error, NifResult};

/// A synchronous answer: `Ok(v)` is `v`, `Err(e)` is `{:error, e}`.
pub struct Answer<T>(pub NifResult<T>);

impl<T: Encoder> Encoder for Answer<T> {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match &self.0 {
            Ok(v) => v.encode(env),
            Err(e) => (atoms::error(), e).encode(env),
        }
    }
}

/// Runs a NIF body.
pub fn answer<T>(body: impl FnOnce() -> NifResult<T>) -> Answer<T> {
    Answer(body())
}

/// A value a NIF argument decodes to, and the name it is reported by when it does not.
pub trait FromArg: Sized + 'static {
    const NAME: &'static str;
    fn from_term(term: Term<'_>) -> Option<Self>;
}

/// An argument of type `T`, decoded when the body asks for it.
pub struct Arg<T>(Option<T>);

impl<'a, T: FromArg> Decoder<'a> for Arg<T> {
    fn decode(term: Term<'a>) -> rustler::NifResult<Self> {
        Ok(Arg(T::from_term(term)))
    }
}

impl<T: FromArg> Arg<T> {
    pub fn get(self) -> NifResult<T> {
        self.0.ok_or(Error::InvalidArgument(T::NAME))
    }
}

/// Declares string arguments (ids, labels, paths) reported under their Elixir names.
macro_rules! string_args {
    ($($(#[$doc:meta])* $ty:ident => $name:literal,)*) => {$(
        $(#[$doc])*
        pub struct $ty(pub String);

        impl FromArg for $ty {
            const NAME: &'static str = $name;
            fn from_term(term: Term<'_>) -> Option<Self> {
                term.decode::<String>().ok().map($ty)
            }
        }
    )*};
}

string_args! {
    /// A peer connection's id.
    PcId => "peer_connection",
    /// A data channel's id.
    DcId => "data_channel",
    /// A local or remote track's id.
    TrackId => "track",
    /// A media engine's id.
    MediaEngineId => "media_engine",
    /// An interceptor registry's id.
    RegistryId => "registry",
    /// An API's id.
    ApiId => "api",
    /// A file player's id.
    PlayerId => "player",
    /// A file recorder's id.
    RecorderId => "recorder",
    /// A file path.
    Path => "path",
    /// A data channel label.
    Label => "label",
    /// A track's stream id.
    StreamId => "stream_id",
    /// A track's own id, as its creator names it.
    Name => "id",
    /// An RTP sender's id.
    SenderId => "sender",
    /// An RTP transceiver's id.
    TransceiverId => "transceiver",
}

/// A process id.
pub struct Pid(pub LocalPid);

impl FromArg for Pid {
    const NAME: &'static str = "pid";
    fn from_term(term: Term<'_>) -> Option<Self> {
        term.decode().ok().map(Pid)
    }
}

/// Decodes an integer that must fit `T` (rustler's own narrow decoders truncate).
pub fn int_arg<T: TryFrom<i64>>(term: Term<'_>) -> Option<T> {
    term.decode::<i64>().ok().and_then(|n| T::try_from(n).ok())
}
