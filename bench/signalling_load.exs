# Load on the signalling server: N Specter.Signalling.Client processes sign in, each relays
# M messages to random others (one at a time, waiting for each POST's answer), then all sign
# out. Server and clients share one VM and talk over 127.0.0.1. Reports messages/s, the
# relay latency (from just before the POST to the receiving client's owner getting the
# message, which includes the receiver's long-poll round trip) and checks that every message
# arrived exactly once, at the right peer, from the right sender.
#
#   MIX_ENV=bench mix run bench/signalling_load.exs [--clients 200] [--messages 100] [--quick]
#
# --quick: 20 clients, 20 messages each.

Code.require_file("bench_support.exs", __DIR__)

alias Specter.Signalling.{Client, Server}

{opts, _, _} =
  OptionParser.parse(System.argv(),
    strict: [clients: :integer, messages: :integer, quick: :boolean]
  )

{default_clients, default_messages} = if opts[:quick], do: {20, 20}, else: {200, 100}
n_clients = Keyword.get(opts, :clients, default_clients)
n_messages = Keyword.get(opts, :messages, default_messages)

Bench.header(
  "Signalling server load (#{n_clients} clients x #{n_messages} messages)",
  "MIX_ENV=bench mix run bench/signalling_load.exs --clients #{n_clients} --messages #{n_messages}"
)

defmodule SignallingLoad do
  # The owner of one client: signs in, counts joins until it sees every other client, then
  # records every message it receives as {from_index, seq, latency_us, to_index}.
  def owner(parent, index, port, n_clients) do
    {:ok, client} = Client.start_link(peer_name: "c#{index}", port: port, request_timeout: 30_000)

    receive do
      {:specter_signalling, ^client, {:signed_in, id, peers}} ->
        send(parent, {:signed_in, index, id, client})
        loop(parent, index, client, map_size(peers), n_clients - 1, [])
    after
      60_000 -> exit(:sign_in_timeout)
    end
  end

  defp loop(parent, index, client, seen, expected, got) do
    seen =
      if seen == expected do
        send(parent, {:all_joined, index})
        :announced
      else
        seen
      end

    receive do
      {:specter_signalling, ^client, {:peer_joined, _, _}} when is_integer(seen) ->
        loop(parent, index, client, seen + 1, expected, got)

      {:specter_signalling, ^client, {:message, _from, _type, body}} ->
        now = System.monotonic_time(:microsecond)
        [from, seq, t0] = body |> String.split(":") |> Enum.map(&String.to_integer/1)
        loop(parent, index, client, seen, expected, [{from, seq, now - t0, index} | got])

      {:specter_signalling, ^client, _other} ->
        loop(parent, index, client, seen, expected, got)

      {:count, from} ->
        send(from, {:count, index, length(got)})
        loop(parent, index, client, seen, expected, got)

      {:report, from} ->
        send(from, {:report, index, got})
        loop(parent, index, client, seen, expected, got)

      {:sign_out, from} ->
        send(from, {:signed_out, index, Client.sign_out(client)})
    end
  end

  def wait_for(tag, n, timeout) do
    Enum.map(1..n, fn _ ->
      receive do
        {^tag, index} -> index
        {^tag, index, a, b} -> {index, a, b}
      after
        timeout -> raise "timed out waiting for #{tag}"
      end
    end)
  end
end

{:ok, server} = Server.start_link(port: 0, ip: {127, 0, 0, 1})
port = Server.port(server)
parent = self()

t_sign_in = System.monotonic_time(:millisecond)

owners =
  for index <- 1..n_clients do
    spawn_link(fn -> SignallingLoad.owner(parent, index, port, n_clients) end)
  end

clients =
  SignallingLoad.wait_for(:signed_in, n_clients, 60_000)
  |> Map.new(fn {index, id, client} -> {index, {id, client}} end)

signed_in_ms = System.monotonic_time(:millisecond) - t_sign_in
SignallingLoad.wait_for(:all_joined, n_clients, 120_000)
joined_ms = System.monotonic_time(:millisecond) - t_sign_in

IO.puts(
  "sign-in: #{n_clients} clients signed in in #{signed_in_ms} ms; every join notification " <>
    "delivered to every client (#{n_clients * (n_clients - 1)}) after #{joined_ms} ms"
)

# Each sender: M messages to random others, one at a time.
t_send = System.monotonic_time(:microsecond)

start_senders = fn ->
  for index <- 1..n_clients do
    Task.async(fn ->
      {_id, client} = clients[index]

      for seq <- 1..n_messages do
        to = Enum.random(Enum.reject(1..n_clients, &(&1 == index)))
        {to_id, _} = clients[to]
        t0 = System.monotonic_time(:microsecond)
        {Client.send_message(client, to_id, "#{index}:#{seq}:#{t0}"), {index, seq, to}}
      end
    end)
  end
end

{sent, events} =
  Bench.monitored(fn -> start_senders.() |> Enum.flat_map(&Task.await(&1, 300_000)) end)

send_done = System.monotonic_time(:microsecond)
failed = for {result, key} <- sent, result != :ok, do: {key, result}
expected = for {:ok, key} <- sent, into: MapSet.new(), do: key

# Wait until the owners hold as many messages as were sent (at most 60 s more).
count_all = fn ->
  for pid <- owners, do: send(pid, {:count, self()})

  Enum.reduce(1..n_clients, 0, fn _, acc ->
    receive do
      {:count, _index, n} -> acc + n
    after
      10_000 -> raise "owner did not answer"
    end
  end)
end

deadline = System.monotonic_time(:millisecond) + 60_000

Stream.repeatedly(fn ->
  done = count_all.() >= MapSet.size(expected)
  unless done, do: Process.sleep(10)
  done or System.monotonic_time(:millisecond) > deadline
end)
|> Enum.find(& &1)

all_received = System.monotonic_time(:microsecond)

for pid <- owners, do: send(pid, {:report, self()})

records =
  Enum.flat_map(1..n_clients, fn _ ->
    receive do
      {:report, _index, got} -> got
    after
      10_000 -> raise "owner did not report"
    end
  end)

keys = Enum.map(records, fn {from, seq, _latency, to} -> {from, seq, to} end)
unique = MapSet.new(keys)
duplicated = length(keys) - MapSet.size(unique)
lost = MapSet.difference(expected, unique) |> MapSet.size()
unexpected = MapSet.difference(unique, expected) |> MapSet.size()
latencies = Enum.map(records, fn {_, _, latency, _} -> latency / 1_000 end)

total = length(records)
send_s = (send_done - t_send) / 1_000_000
relay_s = (all_received - t_send) / 1_000_000

IO.puts(
  "relay: #{length(sent)} sent (#{length(failed)} refused), #{total} received in " <>
    "#{Float.round(relay_s, 2)} s (senders done after #{Float.round(send_s, 2)} s): " <>
    "#{round(total / relay_s)} messages/s"
)

IO.puts("relay latency: " <> Bench.summary(latencies, "ms"))
IO.puts("lost: #{lost}, duplicated: #{duplicated}, misdelivered: #{unexpected}")

IO.puts(
  "system_monitor (long_schedule >= 1 ms, long_gc, large_heap) while sending: " <>
    "#{length(events)} events: " <> Bench.describe_events(Enum.take(events, 10))
)

t_out = System.monotonic_time(:millisecond)
for pid <- owners, do: send(pid, {:sign_out, self()})

sign_outs =
  Enum.map(1..n_clients, fn _ ->
    receive do
      {:signed_out, _index, result} -> result
    after
      60_000 -> raise "sign-out timed out"
    end
  end)

IO.puts(
  "sign-out: #{Enum.count(sign_outs, &(&1 == :ok))}/#{n_clients} in " <>
    "#{System.monotonic_time(:millisecond) - t_out} ms; members left: #{length(Server.members(server))}"
)

if failed != [] or lost != 0 or duplicated != 0 or unexpected != 0 or
     Enum.any?(sign_outs, &(&1 != :ok)) do
  IO.puts("FAILED: #{inspect(Enum.take(failed, 5))}")
  System.halt(1)
end

IO.puts("OK: nothing lost, nothing duplicated")
