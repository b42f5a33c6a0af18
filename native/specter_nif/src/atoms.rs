//! Every atom the native core sends or returns: a closed set, so what a caller can receive
//! is listed here (and in the `@type`s of the Elixir modules). No atom is made at run time.
//! State names, directions and policies are unit enums (`NifUnitEnum`) next to their code.

rustler::atoms! {
    ok, error, nil,

    // Error reasons (the table in `Specter`'s moduledoc; `error.rs` makes them).
    not_found, closed, invalid_argument, invalid_json, invalid_session_description, invalid_sdp,
    invalid_candidate, invalid_track, invalid_option, invalid_state, invalid_codec, too_large,
    buffer_full, not_owner, runtime_unavailable, webrtc,

    // Replies to the caller: `{tag, pc, ...}` / `{:ok, pc, tag}`.
    peer_connection_ready, peer_connection_closed, offer, answer, set_local_description,
    set_remote_description, add_ice_candidate, local_description, current_local_description,
    pending_local_description, remote_description, current_remote_description,
    pending_remote_description, connection_state, ice_connection_state, ice_gathering_state,
    signaling_state, stats, configuration, set_configuration, restart_ice, data_channel_created,
    rtp_sender, remove_track, replace_track, transceiver, transceivers, senders, receivers,
    set_direction, stop_transceiver, play_finished, record_finished,

    // Failures of asynchronous operations: `{tag, pc | id, reason}`.
    peer_connection_error, offer_error, answer_error, set_local_description_error,
    set_remote_description_error, add_ice_candidate_error, local_description_error,
    current_local_description_error, pending_local_description_error, remote_description_error,
    current_remote_description_error, pending_remote_description_error, connection_state_error,
    ice_connection_state_error, ice_gathering_state_error, signaling_state_error, stats_error,
    configuration_error, set_configuration_error, restart_ice_error, create_data_channel_error,
    add_track_error, remove_track_error, replace_track_error, add_transceiver_error,
    get_transceivers_error, get_senders_error, get_receivers_error, set_direction_error,
    stop_transceiver_error, play_error, record_error,

    // Events to the owner.
    connection_state_change, ice_connection_state_change, ice_gathering_state_change,
    signaling_state_change, ice_candidate, ice_candidate_error, negotiation_needed,
    data_channel, data_channel_open, data_channel_message, data_channel_messages,
    data_channel_closing, data_channel_close, data_channel_error,
    data_channel_buffered_amount_low, data_channel_passive, track, track_rtcp, track_mute,
    track_unmute, track_ended, track_passive, sender_rtcp, rtp,

    // Options.
    once, ice_restart, voice_activity_detection,

    // Keys and values of maps.
    text, binary, address, port, url, error_code, error_text, label, id, protocol, ordered,
    negotiated, peer_connection, unspecified, type_ = "type", pli, fir, nack, receiver_report,
    sender_report, remb, ssrc, ssrcs, sender_ssrc, media_ssrc, lost, reports, fraction_lost,
    total_lost, last_sequence_number, jitter, ntp_time, rtp_time, packet_count, octet_count,
    bitrate, kind, audio, video, codec, mime_type, clock_rate, channels, sdp_fmtp_line, rid,
    stream_id, track_id, duplicates, forwarded, forward_time_us, frames, frames_dropped, bytes,
    path,
}
