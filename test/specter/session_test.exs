defmodule Specter.SessionTest do
  # Two sessions over the in-VM signaller, with real connections on loopback, through every
  # transition of icey's tables and every failure path.
  use ExUnit.Case, async: false

  alias Specter.{Negotiation, PeerConnection, Session, TrackLocalStaticSample}
  alias Specter.Signaller.Local

  doctest Specter.Session

  @wait 10_000

  defmodule SlowSdp do
    # A signaller that holds every SDP message back `delay` ms while candidates and control
    # messages go at once: the remote peer's candidates arrive before its description.
    @behaviour Specter.Signaller
    @impl true
    def register({name, _delay}, peer, pid), do: Local.register(name, peer, pid)
    @impl true
    def unregister({name, _delay}, peer), do: Local.unregister(name, peer)
    @impl true
    def send_signal({name, delay}, from, to, {:sdp, _} = message) do
      spawn(fn ->
        Process.sleep(delay)
        Local.send_signal(name, from, to, message)
      end)

      :ok
    end

    def send_signal({name, _delay}, from, to, message),
      do: Local.send_signal(name, from, to, message)
  end

  defmodule NoCandidates do
    # A signaller that loses every ICE candidate: negotiation never completes.
    @behaviour Specter.Signaller
    @impl true
    def register(name, peer, pid), do: Local.register(name, peer, pid)
    @impl true
    def unregister(name, peer), do: Local.unregister(name, peer)
    @impl true
    def send_signal(_name, _from, _to, {:candidate, _}), do: :ok
    def send_signal(name, from, to, message), do: Local.send_signal(name, from, to, message)
  end

  setup do
    name = :"signaller_#{System.unique_integer([:positive])}"
    start_supervised!({Local, name: name})
    {:ok, specter} = Specter.init()
    %{specter: specter, name: name, signaller: {Local, name}}
  end

  defp session!(ctx, peer_id, opts \\ []) do
    opts =
      Keyword.merge(
        [specter: ctx.specter, signaller: ctx.signaller, peer_id: peer_id, subscriber: self()],
        opts
      )

    start_supervised!({Session, opts}, id: peer_id)
  end

  # The events of `session` until `event` (included), in order.
  defp events_until(session, event, acc \\ []) do
    receive do
      {:specter_session, ^session, ^event} -> Enum.reverse([event | acc])
      {:specter_session, ^session, other} -> events_until(session, event, [other | acc])
    after
      @wait -> flunk("no #{inspect(event)} from the session; saw #{inspect(Enum.reverse(acc))}")
    end
  end

  defp states(events), do: for({:state, s} <- events, do: s)

  # Alice calls Bob, Bob accepts: both active.
  defp connect!(alice, bob) do
    :ok = Session.call(alice, "bob")
    assert_receive {:specter_session, ^bob, {:incoming_call, "alice"}}, @wait
    :ok = Session.accept(bob)
    a = events_until(alice, {:state, :active})
    b = events_until(bob, {:state, :active})
    {a, b}
  end

  defp idle!(session) do
    events = events_until(session, {:state, :idle})
    assert Session.state(session) == :idle
    events
  end

  test "outgoing and incoming paths: idle → init → negotiating → active, data both ways", ctx do
    alice = session!(ctx, "alice")
    bob = session!(ctx, "bob")
    assert Session.remote_peer_id(alice) == nil

    {a, b} = connect!(alice, bob)
    assert states(a) == [:outgoing_init, :negotiating, :active]
    assert states(b) == [:incoming_init, :negotiating, :active]
    assert {:media_attached, %{audio: nil, video: nil}} = receive_event(alice)
    assert Session.remote_peer_id(alice) == "bob"
    assert Session.remote_peer_id(bob) == "alice"
    assert Session.state(alice) == :active
    assert is_binary(Session.peer_connection(alice))

    # The caller made the channel; both see it open, and data goes both ways.
    assert_receive {:specter_session, ^alice, {:data_channel_open, dc_a}}, @wait
    assert_receive {:specter_session, ^bob, {:data_channel_open, dc_b}}, @wait
    assert Session.data_channel(alice) == dc_a
    assert Session.data_channel(bob) == dc_b
    :ok = Session.send_data(alice, {:text, "hello"})
    :ok = Session.send_data(bob, <<0, 1, 2>>)
    :ok = Session.send_data(bob, {:binary, "raw"})
    assert_receive {:specter_session, ^bob, {:data, {:text, "hello"}}}, @wait
    assert_receive {:specter_session, ^alice, {:data, {:binary, <<0, 1, 2>>}}}, @wait
    assert_receive {:specter_session, ^alice, {:data, {:binary, "raw"}}}, @wait

    # Alice hangs up: ending → ended → idle on her side, a remote hangup on Bob's.
    :ok = Session.hangup(alice, "done")
    a = idle!(alice)
    assert states(a) == [:ending, :ended, :idle]
    assert {:call_ended, "bob", {:hangup, "done"}} in a
    assert Enum.any?(a, &match?({:media_detached, %{audio: nil, video: nil}}, &1))
    b = idle!(bob)
    assert states(b) == [:ending, :ended, :idle]
    assert {:call_ended, "alice", {:remote_hangup, "done"}} in b
    assert Session.peer_connection(alice) == nil
    assert Session.remote_peer_id(bob) == nil
    assert Session.send_data(alice, "late") == {:error, :data_channel_not_open}

    # Idle again: a second call, the other way round.
    :ok = Session.call(bob, "alice")
    assert_receive {:specter_session, ^alice, {:incoming_call, "bob"}}, @wait
    :ok = Session.accept(alice)
    events_until(bob, {:state, :active})
    events_until(alice, {:state, :active})
  end

  defp receive_event(session) do
    assert_receive {:specter_session, ^session, event}, @wait
    event
  end

  test "reject: the caller's call ends with the reason; both return to idle", ctx do
    alice = session!(ctx, "alice")
    bob = session!(ctx, "bob")
    :ok = Session.call(alice, "bob")
    assert_receive {:specter_session, ^bob, {:incoming_call, "alice"}}, @wait
    :ok = Session.reject(bob, "not now")

    a = idle!(alice)
    assert states(a) == [:outgoing_init, :ended, :idle]
    assert {:call_ended, "bob", {:rejected, "not now"}} in a
    refute Enum.any?(a, &match?({:media_detached, _}, &1))
    b = idle!(bob)
    assert states(b) == [:incoming_init, :ended, :idle]
    assert {:call_ended, "alice", {:local_reject, "not now"}} in b
  end

  test "calls in the wrong state are refused with the state", ctx do
    alice = session!(ctx, "alice")
    bob = session!(ctx, "bob")

    assert Session.accept(alice) == {:error, {:invalid_state, :idle}}
    assert Session.reject(alice, "x") == {:error, {:invalid_state, :idle}}
    assert Session.hangup(alice) == {:error, {:invalid_state, :idle}}
    assert Session.call(alice, "nobody") == {:error, :unknown_peer}
    assert Session.state(alice) == :idle

    :ok = Session.call(alice, "bob")
    assert_receive {:specter_session, ^bob, {:incoming_call, "alice"}}, @wait
    assert Session.call(alice, "bob") == {:error, {:invalid_state, :outgoing_init}}
    assert Session.accept(alice) == {:error, {:invalid_state, :outgoing_init}}
    assert Session.call(bob, "alice") == {:error, {:invalid_state, :incoming_init}}
    assert Session.send_data(bob, "x") == {:error, :data_channel_not_open}
    assert Session.send_data(bob, 42) == {:error, {:invalid_argument, :data}}
    :ok = Session.accept(bob)
    assert Session.accept(bob) == {:error, {:invalid_state, :negotiating}}
    events_until(alice, {:state, :active})
    assert Session.reject(alice, "x") == {:error, {:invalid_state, :active}}
  end

  test "hangup while the call is ringing and while negotiating", ctx do
    alice = session!(ctx, "alice")
    bob = session!(ctx, "bob")

    # The caller gives up before an answer.
    :ok = Session.call(alice, "bob")
    assert_receive {:specter_session, ^bob, {:incoming_call, "alice"}}, @wait
    :ok = Session.hangup(alice, "changed my mind")
    assert states(idle!(alice)) == [:outgoing_init, :ended, :idle]
    b = idle!(bob)
    assert states(b) == [:incoming_init, :ended, :idle]
    assert {:call_ended, "alice", {:remote_hangup, "changed my mind"}} in b

    # The callee accepts and hangs up at once, during negotiation.
    :ok = Session.call(alice, "bob")
    assert_receive {:specter_session, ^bob, {:incoming_call, "alice"}}, @wait
    :ok = Session.accept(bob)
    :ok = Session.hangup(bob)
    b = idle!(bob)
    assert states(b) == [:incoming_init, :negotiating, :ending, :ended, :idle]
    a = idle!(alice)
    assert {:call_ended, "bob", {:remote_hangup, "hangup"}} in a
    refute :active in states(a)
  end

  test "a call that comes while busy is rejected with \"busy\"", ctx do
    alice = session!(ctx, "alice")
    bob = session!(ctx, "bob")
    carol = session!(ctx, "carol")
    connect!(alice, bob)

    :ok = Session.call(carol, "bob")
    c = idle!(carol)
    assert {:call_ended, "bob", {:rejected, "busy"}} in c
    assert_receive {:specter_session, ^bob, {:incoming_call_rejected, "carol", "busy"}}, @wait
    assert Session.state(bob) == :active
    assert Session.remote_peer_id(bob) == "alice"
  end

  test "glare: both call each other at once; the smaller id accepts, one call results", ctx do
    alice = session!(ctx, "alice")
    bob = session!(ctx, "bob")

    # Bob's call/2 is queued first, then Alice's init reaches Bob's mailbox: each is in
    # :outgoing_init when the other's init arrives.
    :ok = :sys.suspend(bob)
    bob_call = Task.async(fn -> Session.call(bob, "alice") end)
    assert wait_until(fn -> Process.info(bob, :message_queue_len) == {:message_queue_len, 1} end)
    :ok = Session.call(alice, "bob")
    assert wait_until(fn -> Process.info(bob, :message_queue_len) == {:message_queue_len, 2} end)
    :ok = :sys.resume(bob)
    assert Task.await(bob_call) == :ok

    a = events_until(alice, {:state, :active})
    b = events_until(bob, {:state, :active})
    assert states(a) == [:outgoing_init, :negotiating, :active]
    assert states(b) == [:outgoing_init, :negotiating, :active]
    refute Enum.any?(a ++ b, &match?({:incoming_call, _}, &1))
    # Bob ("bob" > "alice") kept his call: he offered, with the data channel.
    assert_receive {:specter_session, ^alice, {:data_channel_open, _}}, @wait
    assert_receive {:specter_session, ^bob, {:data_channel_open, _}}, @wait
    :ok = Session.send_data(alice, {:text, "glare solved"})
    assert_receive {:specter_session, ^bob, {:data, {:text, "glare solved"}}}, @wait
  end

  defp wait_until(fun, ms \\ 2_000) do
    deadline = System.monotonic_time(:millisecond) + ms

    Stream.repeatedly(fn ->
      fun.() || (Process.sleep(5) && false)
    end)
    |> Enum.find(fn ok -> ok or System.monotonic_time(:millisecond) > deadline end)
  end

  test "remote candidates that arrive before the remote description are queued", ctx do
    name = ctx.name
    slow = {SlowSdp, {name, 400}}
    alice = session!(ctx, "alice", signaller: slow)
    bob = session!(ctx, "bob", signaller: slow)

    :ok = Session.call(alice, "bob")
    assert_receive {:specter_session, ^bob, {:incoming_call, "alice"}}, @wait
    :ok = Session.accept(bob)

    # Alice's candidates reach Bob while her offer is held back: Bob queues them.
    negotiation = fn -> :sys.get_state(bob).nego end
    assert wait_until(fn -> Negotiation.pending_candidates(negotiation.()) != [] end, 5_000)
    refute Negotiation.remote_description_set?(negotiation.())
    events_until(alice, {:state, :active})
    events_until(bob, {:state, :active})
    assert Negotiation.pending_candidates(negotiation.()) == []

    # Bob knows Alice's host candidates (not only peer-reflexive ones learnt from checks):
    # the queued candidates were added once the offer was set.
    pc = Session.peer_connection(bob)
    stats = stats!(ctx.specter, pc)
    remote = for %{"type" => "remote-candidate"} = c <- stats, do: c["candidateType"]
    assert "host" in remote, inspect(remote)
  end

  # The session owns the connection; get_stats answers the caller.
  defp stats!(specter, pc) do
    :ok = PeerConnection.get_stats(specter, pc, format: :map)
    assert_receive {:stats, ^pc, stats}, @wait
    Map.values(stats)
  end

  test "negotiation that never completes ends in bounded time", ctx do
    lossy = {NoCandidates, ctx.name}
    alice = session!(ctx, "alice", signaller: lossy, negotiation_timeout: 1_500)
    bob = session!(ctx, "bob", signaller: lossy, negotiation_timeout: 60_000)

    :ok = Session.call(alice, "bob")
    assert_receive {:specter_session, ^bob, {:incoming_call, "alice"}}, @wait
    :ok = Session.accept(bob)
    a = idle!(alice)
    assert {:call_ended, "bob", :negotiation_timeout} in a
    assert states(a) == [:outgoing_init, :negotiating, :ending, :ended, :idle]
    b = idle!(bob)
    assert {:call_ended, "alice", {:remote_hangup, "negotiation_timeout"}} in b
  end

  test "the remote peer vanishes: the call ends with a reason in bounded time", ctx do
    alice = session!(ctx, "alice", disconnect_timeout: 1_000)
    # Bob runs in a process of his own that is killed without a word.
    test = self()

    bob_owner =
      spawn(fn ->
        {:ok, bob} =
          Session.start_link(
            specter: ctx.specter,
            signaller: ctx.signaller,
            peer_id: "bob",
            subscriber: test
          )

        send(test, {:bob, bob})
        Process.sleep(:infinity)
      end)

    assert_receive {:bob, bob}, @wait
    connect!(alice, bob)
    Process.exit(bob, :kill)
    Process.exit(bob_owner, :kill)

    started = System.monotonic_time(:millisecond)
    a = idle!(alice)
    elapsed = System.monotonic_time(:millisecond) - started
    assert [{:call_ended, "bob", reason}] = for({:call_ended, _, _} = e <- a, do: e)
    assert reason in [:disconnected, :ice_failed, :closed], inspect(reason)
    assert elapsed < 15_000
    assert {:media_detached, _} = Enum.find(a, &match?({:media_detached, _}, &1))
  end

  test "the signaller's process exits: calls end and the sessions stop", ctx do
    alice = session!(ctx, "alice")
    bob = session!(ctx, "bob")
    connect!(alice, bob)
    ref_a = Process.monitor(alice)
    ref_b = Process.monitor(bob)

    :ok = stop_supervised!(ctx.name)

    for {s, ref, peer} <- [{alice, ref_a, "bob"}, {bob, ref_b, "alice"}] do
      events = events_until(s, {:state, :idle})
      assert {:call_ended, peer, :signaller_down} in events
      assert :ended in states(events)
      assert_receive {:DOWN, ^ref, :process, ^s, {:shutdown, :signaller_down}}, @wait
    end
  end

  test "media: local tracks attach on active and detach on ended; remote tracks announced",
       ctx do
    media = [audio: :sendrecv, video: :sendrecv]
    alice = session!(ctx, "alice", media ++ [data_channel: false])
    bob = session!(ctx, "bob", media ++ [data_channel: false])
    %{audio: a_audio, video: a_video} = Session.media(alice)
    %{audio: b_audio, video: b_video} = Session.media(bob)
    assert is_binary(b_video)

    {a, _b} = connect!(alice, bob)
    assert states(a) == [:outgoing_init, :negotiating, :active]

    assert_receive {:specter_session, ^alice,
                    {:media_attached, %{audio: ^a_audio, video: ^a_video}}},
                   @wait

    assert_receive {:specter_session, ^bob, {:media_attached, %{audio: ^b_audio}}}, @wait

    # Samples written on :active reach the other side, which announces the tracks.
    for {track, payload} <- [{a_audio, <<0xFC, 1, 2, 3>>}, {a_video, <<0x10, 2, 0, 0x9D>>}],
        _ <- 1..20,
        do: :ok = TrackLocalStaticSample.write_sample(ctx.specter, track, payload, 20_000)

    kinds =
      for _ <- 1..2, into: MapSet.new() do
        assert_receive {:specter_session, ^bob, {:track, track, %{kind: kind}}}, @wait
        assert Session.media(bob)[:"remote_#{kind}"] == track
        kind
      end

    assert kinds == MapSet.new([:audio, :video])
    refute_received {:specter_session, _, {:data_channel_open, _}}

    :ok = Session.hangup(bob)
    b = idle!(bob)

    assert {:media_detached, %{remote_audio: ra, remote_video: rv}} =
             Enum.find(b, &match?({:media_detached, _}, &1))

    assert is_binary(ra) and is_binary(rv)
    assert %{remote_audio: nil, remote_video: nil, audio: ^b_audio} = Session.media(bob)
    idle!(alice)
  end

  test "an echo: local RTP tracks fed by native forwarding of the remote ones", ctx do
    alice = session!(ctx, "alice", video: :sendrecv, data_channel: false)

    bob = session!(ctx, "bob", video: :sendrecv, data_channel: false, local_tracks: :rtp)

    %{video: camera} = Session.media(alice)
    %{video: echo} = Session.media(bob)
    assert {:ok, true} == {:ok, Specter.TrackLocalStaticRTP.exists?(ctx.specter, echo)}
    connect!(alice, bob)

    for _ <- 1..30,
        do:
          :ok =
            TrackLocalStaticSample.write_sample(ctx.specter, camera, <<0x10, 2, 0, 0x9D>>, 33_333)

    assert_receive {:specter_session, ^bob, {:track, from_alice, %{kind: :video}}}, @wait
    :ok = Specter.TrackRemote.forward(ctx.specter, from_alice, echo)

    for _ <- 1..30,
        do:
          :ok =
            TrackLocalStaticSample.write_sample(ctx.specter, camera, <<0x10, 2, 0, 0x9D>>, 33_333)

    assert_receive {:specter_session, ^alice, {:track, echoed, %{kind: :video}}}, @wait
    assert Session.media(alice).remote_video == echoed
    assert %{forwarded: forwarded} = elem(Specter.TrackRemote.info(ctx.specter, from_alice), 1)
    assert forwarded > 0
  end

  test "a libwebrtc-style peer that offers without init: the offer waits for accept", ctx do
    bob = session!(ctx, "bob")
    # This test process is the plain peer: it registers, sends an offer at once, and
    # expects an answer.
    {:ok, _} = Local.register(ctx.name, "plain", self())
    specter = ctx.specter
    {:ok, pc} = PeerConnection.new(specter, PeerConnection.default_api!(specter))
    assert_receive {:peer_connection_ready, ^pc}, @wait
    {:ok, _dc} = Specter.DataChannel.create(specter, pc, "chat")
    :ok = PeerConnection.create_offer(specter, pc)
    assert_receive {:offer, ^pc, offer}, @wait
    :ok = PeerConnection.set_local_description(specter, pc, offer)
    assert_receive {:ok, ^pc, :set_local_description}, @wait
    {:ok, offer_map} = Specter.JSON.decode(offer)
    :ok = Local.send_signal(ctx.name, "plain", "bob", {:control, :init, nil})
    :ok = Local.send_signal(ctx.name, "plain", "bob", {:sdp, offer_map})

    assert_receive {:specter_session, ^bob, {:incoming_call, "plain"}}, @wait
    Process.sleep(100)
    :ok = Session.accept(bob)
    assert_receive {:specter_signal, "bob", {:control, :accept, nil}}, @wait
    assert_receive {:specter_signal, "bob", {:sdp, %{"type" => "answer"} = answer}}, @wait
    :ok = PeerConnection.set_remote_description(specter, pc, answer)
    relay_plain(specter, pc, ctx.name)
    events_until(bob, {:state, :active})
    assert_receive {:specter_session, ^bob, {:data_channel_open, _}}, @wait
  end

  # Candidates between the plain peer (this process) and Bob until connected.
  defp relay_plain(specter, pc, name, deadline \\ nil) do
    deadline = deadline || System.monotonic_time(:millisecond) + @wait

    receive do
      {:ice_candidate, ^pc, json} when is_binary(json) ->
        {:ok, c} = Specter.JSON.decode(json)
        :ok = Local.send_signal(name, "plain", "bob", {:candidate, c})
        relay_plain(specter, pc, name, deadline)

      {:specter_signal, "bob", {:candidate, c}} when is_map(c) ->
        :ok = PeerConnection.add_ice_candidate(specter, pc, c)
        relay_plain(specter, pc, name, deadline)

      {:connection_state_change, ^pc, :connected} ->
        :ok
    after
      max(deadline - System.monotonic_time(:millisecond), 0) -> flunk("plain peer not connected")
    end
  end

  test "options are checked", ctx do
    base = [specter: ctx.specter, signaller: ctx.signaller]
    assert Session.start_link(base) == {:error, {:missing_option, :peer_id}}

    assert Session.start_link(base ++ [peer_id: "x", audio: :loud]) ==
             {:error, {:invalid_option, :audio}}

    assert Session.start_link(base ++ [peer_id: "x", data_channel: false]) ==
             {:error, :nothing_to_negotiate}

    assert Session.start_link(base ++ [peer_id: "x", local_tracks: :mp4]) ==
             {:error, {:invalid_option, :local_tracks}}

    assert Session.start_link(base ++ [peer_id: "x", colour: :blue]) ==
             {:error, {:invalid_option, :colour}}

    _ = session!(ctx, "taken")
    Process.flag(:trap_exit, true)
    assert Session.start_link(base ++ [peer_id: "taken"]) == {:error, :already_registered}
  end
end
