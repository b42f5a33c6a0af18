defmodule Specter.PropEr do
  @moduledoc false
  # PropEr comes from Debian (`erlang-proper`, installed by `scripts/setup erlang-proper`,
  # which `scripts/test` runs), never from hex: this puts its ebin on the code path and runs
  # properties. Calls into :proper go through apply/3 so this module compiles without it.

  @glob "/usr/lib/erlang/lib/proper-*/ebin"

  @doc "Puts PropEr on the code path; `:ok` or `{:error, message}`."
  @spec load() :: :ok | {:error, String.t()}
  def load do
    case Path.wildcard(@glob) do
      [] ->
        {:error,
         "PropEr is not installed (nothing matches #{@glob}). Install it with " <>
           "`scripts/setup erlang-proper` (apt-get install -y --no-install-recommends " <>
           "erlang-proper), or run scripts/test, which does."}

      paths ->
        ebin = paths |> Enum.sort() |> List.last()
        Code.prepend_path(ebin)

        case Code.ensure_loaded(:proper) do
          {:module, :proper} -> :ok
          {:error, reason} -> {:error, "PropEr found in #{ebin} but not loadable: #{reason}"}
        end
    end
  end

  @doc "Like `load/0`, raising with the installation hint when PropEr is missing."
  @spec load!() :: :ok
  def load! do
    case load() do
      :ok -> :ok
      {:error, message} -> raise message
    end
  end

  @doc """
  Checks `property` with `numtests` cases. Returns `:ok`, or `{:error, counterexample}` with
  PropEr's (shrunk) counterexample.
  """
  @spec check(term(), pos_integer()) :: :ok | {:error, term()}
  def check(property, numtests) do
    opts = [{:numtests, numtests}, {:max_size, 30}, {:on_output, fn _, _ -> :ok end}]

    case apply(:proper, :quickcheck, [property, opts]) do
      true -> :ok
      _ -> {:error, apply(:proper, :counterexample, [])}
    end
  end

  @doc "`proper:forall/2`."
  def forall(generator, fun), do: apply(:proper, :forall, [generator, fun])

  @doc "`proper:whenfail/2`: `action` (a thunk) runs when `property` fails."
  def whenfail(action, property), do: apply(:proper, :whenfail, [action, property])

  @doc "Calls a `proper_types` generator constructor."
  def t(name, args \\ []), do: apply(:proper_types, name, args)
end
