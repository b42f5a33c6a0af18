//! The NIFs of `Specter.TrackLocalStaticSample` (a local track fed with encoded samples that
//! Specter packetizes) and those both local track flavors share.

use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;
use rustler::{Atom, Binary, Term};

use super::{Flavor, TrackEntry, Write};
use crate::atoms;
use crate::codec;
use crate::error::{Error, NifResult};
use crate::instance::Specter;
use crate::nif::{answer, Answer, Arg, Name, StreamId};
use specter_core::registry::{lock, new_id};

/// Creates a local track of either flavor.
pub fn new(
    specter: Arg<Specter>,
    codec: Term<'_>,
    track_id: Arg<Name>,
    stream_id: Arg<StreamId>,
    flavor: Flavor,
) -> NifResult<(Atom, String)> {
    let inst = specter.instance()?;
    let (codec, kind) = codec::decode(codec)?;
    let (track_id, stream_id) = (track_id.get()?.0, stream_id.get()?.0);
    let id = new_id();
    let entry = TrackEntry::new(id.clone(), flavor, codec, kind, track_id, stream_id);
    inst.tracks.insert(id.clone(), entry);
    Ok((atoms::ok(), id))
}

#[rustler::nif]
fn track_local_new(
    specter: Arg<Specter>,
    codec: Term<'_>,
    track_id: Arg<Name>,
    stream_id: Arg<StreamId>,
) -> Answer<(Atom, String)> {
    answer(|| {
        let (decoded, _) = codec::decode(codec)?;
        if decoded.payloader().is_err() {
            return Err(Error::InvalidCodec(format!(
                "no packetizer for {}; send it with Specter.TrackLocalStaticRTP",
                decoded.mime_type
            )));
        }
        new(specter, codec, track_id, stream_id, Flavor::Sample)
    })
}

#[rustler::nif]
fn track_local_exists(specter: Arg<Specter>, track: Term<'_>) -> bool {
    specter.instance().is_ok_and(|i| i.local_track(track).is_ok())
}

/// Queues one encoded sample lasting `duration_us` for every connection the track is on.
#[rustler::nif]
fn track_local_write_sample(
    specter: Arg<Specter>,
    track: Term<'_>,
    data: Term<'_>,
    duration_us: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let inst = specter.instance()?;
        let entry = inst.local_track(track)?;
        if entry.flavor != Flavor::Sample {
            return Err(Error::InvalidTrack);
        }
        let bin: Binary<'_> = data.decode().map_err(|_| Error::InvalidArgument("data"))?;
        let us: u64 = duration_us
            .decode()
            .ok()
            .filter(|us| *us > 0 && *us <= 10_000_000)
            .ok_or(Error::InvalidArgument("duration"))?;
        let sample = Bytes::copy_from_slice(bin.as_slice());
        entry.submit(&inst.handle, Write::Sample(sample, Duration::from_micros(us)))?;
        Ok(atoms::ok())
    })
}

/// Forgets a local track (either flavor): its senders stay on their connections but send
/// nothing until `replace_track` gives them another track; forwarding into it stops.
#[rustler::nif]
fn track_local_close(specter: Arg<Specter>, track: Term<'_>) -> Answer<Atom> {
    answer(|| {
        let inst = specter.instance()?;
        let id = inst.local_track(track)?.id.clone();
        let entry = inst.tracks.remove(&id).ok_or(Error::InvalidTrack)?;
        for b in lock(&entry.bindings).drain(..) {
            *lock(&b.entry) = Weak::new();
        }
        *lock(&entry.source) = None;
        Ok(atoms::ok())
    })
}
