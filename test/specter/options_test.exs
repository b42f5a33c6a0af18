defmodule Specter.OptionsTest do
  use ExUnit.Case, async: true
  doctest Specter.Options

  alias Specter.Options

  test "a required key given as nil is missing; a key given twice is checked each time" do
    schema = [name: [type: :string, required: true], port: [type: :pos_integer]]
    assert Options.validate([name: nil], schema) == {:error, {:missing_option, :name}}

    assert Options.validate([name: "a", port: 1, port: 0], schema) ==
             {:error, {:invalid_option, :port}}

    assert Options.validate([name: "a", port: 1, port: 2], schema) ==
             {:ok, [name: "a", port: 1, port: 2]}
  end

  test "the first mistake in the order given is reported, then missing keys" do
    schema = [a: [type: :boolean, required: true], b: [type: :boolean], c: [required: true]]
    assert Options.validate([b: 1, x: 2], schema) == {:error, {:invalid_option, :b}}
    assert Options.validate([x: 2, b: 1], schema) == {:error, {:invalid_option, :x}}
    assert Options.validate([b: true], schema) == {:error, {:missing_option, :a}}
    assert Options.validate([b: true, a: false], schema) == {:error, {:missing_option, :c}}
  end

  test "types" do
    ok = fn value, type -> Options.check(value, type) == {:ok, value} end

    assert ok.(self(), :pid)
    refute ok.(:self, :pid)
    assert ok.(0, :non_neg_integer)
    refute ok.(0, :pos_integer)
    refute ok.(1.0, :pos_integer)
    refute ok.(1.0, {:in, 1..2})
    assert ok.({:global, :x}, :name)
    assert ok.({:via, Registry, {:r, 1}}, :name)
    refute ok.("x", :name)
    refute ok.({127, 0, 0}, :ip_address)
    assert ok.({0, 0, 0, 0, 0, 0, 0, 1}, :host)
    assert ok.(~c"localhost", :host)
    refute ok.("localhost", :host)
    refute ok.([], :host)
    assert ok.(%Specter.RtpCodecCapability{}, {:struct, Specter.RtpCodecCapability})
    refute ok.(%{}, {:struct, Specter.RtpCodecCapability})
    refute ok.(["a" | "b"], {:list, :string})

    assert Options.check(["1", "2"], {:list, {:custom, &{:ok, String.to_integer(&1)}}}) ==
             {:ok, [1, 2]}

    refute ok.(:x, {:custom, fn _ -> false end})
    refute ok.(:x, {:custom, fn _ -> :error end})
  end

  test "every constructor follows the same rules" do
    {:ok, specter} = Specter.init()

    constructors = [
      {&Specter.Config.new/1, []},
      {&Specter.Session.start_link/1,
       [specter: specter, signaller: {Specter.Signaller.Local, :x}, peer_id: "a"]},
      {&Specter.Room.start_link/1, [specter: specter, name: "r"]},
      {&Specter.Room.Participant.start_link/1, [specter: specter, name: "p", room: "room:r"]},
      {&Specter.EchoPeer.start_link/1, [specter: specter]},
      {&Specter.Signaller.Local.start_link/1, [name: :x]},
      {&Specter.Signalling.Server.start_link/1, []},
      {&Specter.Signalling.Client.start_link/1, []}
    ]

    for {start, required} <- constructors do
      assert start.(required ++ [colour: :blue]) == {:error, {:invalid_option, :colour}}
      assert start.(required ++ [port: :http]) == {:error, {:invalid_option, :port}}
      assert start.([:not_a_pair | required]) == {:error, {:invalid_argument, :options}}
      assert start.(%{}) == {:error, {:invalid_argument, :options}}

      for {key, _} <- required do
        assert start.(Keyword.delete(required, key)) == {:error, {:missing_option, key}}
        assert start.(Keyword.put(required, key, nil)) == {:error, {:missing_option, key}}
      end
    end
  end
end
