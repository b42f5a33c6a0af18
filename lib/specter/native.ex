defmodule Specter.Native do
  @moduledoc false
  # Stubs of the NIFs in native/specter_nif, grouped by the module they serve. Each is
  # replaced when the library loads; every one returns at once and answers async work with
  # a message.

  @on_load :load_nif

  def load_nif do
    path = :filename.join(:code.priv_dir(:specter), ~c"native/libspecter_nif")

    case :erlang.load_nif(path, 0) do
      :ok ->
        :ok

      {:error, {:reload, _}} ->
        :ok

      {:error, reason} ->
        require Logger
        Logger.error("Specter could not load its NIF from #{path}: #{inspect(reason)}")
        {:error, reason}
    end
  end

  defp nif, do: :erlang.nif_error(:nif_not_loaded)

  # Specter
  def init(_config), do: nif()
  def config(_specter), do: nif()
  def new_media_engine(_specter, _default_codecs), do: nif()
  def media_engine_register_codec(_specter, _media_engine, _codec, _payload_type), do: nif()
  def new_registry(_specter, _media_engine), do: nif()
  def new_api(_specter, _media_engine, _registry), do: nif()
  def media_engine_exists(_specter, _id), do: nif()
  def registry_exists(_specter, _id), do: nif()
  def api_exists(_specter, _id), do: nif()
  def instance_info(_specter), do: nif()
  def runtime_info, do: nif()

  # Specter.PeerConnection
  def pc_new(_specter, _api), do: nif()
  def pc_close(_specter, _pc), do: nif()
  def pc_exists(_specter, _pc), do: nif()
  def pc_controlling_process(_specter, _pc, _pid), do: nif()
  def pc_create_offer(_specter, _pc, _opts), do: nif()
  def pc_create_answer(_specter, _pc, _opts), do: nif()
  def pc_set_local_description(_specter, _pc, _desc), do: nif()
  def pc_set_remote_description(_specter, _pc, _desc), do: nif()
  def pc_add_ice_candidate(_specter, _pc, _candidate), do: nif()
  def pc_description(_specter, _pc, _which, _include_candidates), do: nif()
  def pc_state(_specter, _pc, _which), do: nif()
  def pc_get_stats(_specter, _pc, _as_map), do: nif()
  def pc_restart_ice(_specter, _pc), do: nif()
  def pc_get_configuration(_specter, _pc), do: nif()
  def pc_set_configuration(_specter, _pc, _ice_servers, _policy), do: nif()

  # Specter.PeerConnection (media) and Specter.RtpTransceiver
  def pc_add_track(_specter, _pc, _track), do: nif()
  def pc_remove_track(_specter, _pc, _sender), do: nif()
  def pc_replace_track(_specter, _pc, _sender, _track), do: nif()
  def pc_add_transceiver(_specter, _pc, _kind_or_track, _direction), do: nif()
  def pc_get_transceivers(_specter, _pc), do: nif()
  def pc_get_senders(_specter, _pc), do: nif()
  def pc_get_receivers(_specter, _pc), do: nif()
  def transceiver_set_direction(_specter, _pc, _transceiver, _direction), do: nif()
  def transceiver_stop(_specter, _pc, _transceiver), do: nif()

  # Specter.DataChannel
  def dc_create(_specter, _pc, _label, _opts, _created), do: nif()
  def dc_send(_specter, _dc, _data, _text), do: nif()
  def dc_close(_specter, _dc), do: nif()
  def dc_ready_state(_specter, _dc), do: nif()
  def dc_info(_specter, _dc), do: nif()
  def dc_set_active(_specter, _dc, _active), do: nif()
  def dc_buffered_amount(_specter, _dc), do: nif()
  def dc_set_batch(_specter, _dc, _batch), do: nif()
  def dc_set_buffered_amount_low_threshold(_specter, _dc, _threshold), do: nif()

  # Specter.TrackLocalStaticSample
  def track_local_new(_specter, _codec, _id, _stream_id), do: nif()
  def track_local_exists(_specter, _track), do: nif()
  def track_local_write_sample(_specter, _track, _data, _duration_us), do: nif()
  def track_local_close(_specter, _track), do: nif()

  # Specter.TrackLocalStaticRTP
  def track_local_rtp_new(_specter, _codec, _id, _stream_id), do: nif()
  def track_local_rtp_write_rtp(_specter, _track, _packet), do: nif()

  # Specter.TrackRemote
  def track_remote_exists(_specter, _track), do: nif()
  def track_remote_set_active(_specter, _track, _active), do: nif()
  def track_remote_info(_specter, _track), do: nif()
  def track_remote_request_keyframe(_specter, _track, _fir), do: nif()
  def track_remote_forward(_specter, _track, _local), do: nif()
  def track_remote_unforward(_specter, _track, _local), do: nif()
  def track_remote_relay(_specter, _track, _pid), do: nif()
  def track_remote_unrelay(_specter, _track, _pid), do: nif()

  # Specter.MediaFile
  def media_file_play(_specter, _track, _path, _fps, _repeat), do: nif()
  def media_file_stop_play(_specter, _player), do: nif()
  def media_file_record(_specter, _track, _path), do: nif()
  def media_file_stop_record(_specter, _recorder), do: nif()

  # Specter.JSON
  def json_decode(_text), do: nif()
  def json_encode(_term), do: nif()
end
