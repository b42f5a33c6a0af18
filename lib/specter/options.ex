defmodule Specter.Options do
  @moduledoc """
  The keyword options of Specter's constructors (`Specter.init/1` through
  `Specter.Config.new/1`, `Specter.Session.start_link/1`, `Specter.Room.start_link/1`,
  `Specter.Room.Participant.start_link/1`, `Specter.EchoPeer.start_link/1`,
  `Specter.Signaller.Local.start_link/1`, `Specter.Signalling.Server.start_link/1`,
  `Specter.Signalling.Client.start_link/1`) are checked by one small schema validator,
  so a mistake gives the same error everywhere:

  | mistake | error |
  |---|---|
  | not a keyword list (an improper list, a map, a list with a non-`{atom, value}` element) | `{:error, {:invalid_argument, :options}}` |
  | an unknown key | `{:error, {:invalid_option, key}}` |
  | a value of the wrong type or shape | `{:error, {:invalid_option, key}}` |
  | a required key absent, or `nil` | `{:error, {:missing_option, key}}` |

  The options are read in the order given and the first mistake is the one reported;
  missing required keys come after, in the schema's order. A key given twice is checked
  each time.

  ## Schemas

  A schema is a keyword list of keys and their specs: `:type` (`t:type/0`, `:any` when
  left out), `required: true`, and `:default` (used, and checked like a given value, when
  the key is absent).

      iex> schema = [name: [type: :string, required: true], port: [type: {:in, 0..65_535}, default: 8888]]
      iex> Specter.Options.validate([name: "room"], schema)
      {:ok, [name: "room", port: 8888]}
      iex> Specter.Options.validate([name: "room", port: 70_000], schema)
      {:error, {:invalid_option, :port}}
      iex> Specter.Options.validate([port: 1], schema)
      {:error, {:missing_option, :name}}
      iex> Specter.Options.validate([name: "room", colour: :blue], schema)
      {:error, {:invalid_option, :colour}}
      iex> Specter.Options.validate(%{name: "room"}, schema)
      {:error, {:invalid_argument, :options}}
  """

  @typedoc """
  What a value must be:

    * `:any`, `:boolean`, `:atom`, `:string` (a binary), `:pid`, `:pos_integer`,
      `:non_neg_integer`
    * `nil` - the value `nil` (with `{:or, [nil, type]}`: optional and nil-able)
    * `:ip_address` - an `:inet` address tuple
    * `:host` - an `:inet` address tuple or a host name as a charlist (what
      `:gen_tcp.connect/3` takes)
    * `:name` - a process name for `GenServer.start_link/3` (an atom, `{:global, term}` or
      `{:via, module, term}`), or `nil`
    * `{:in, values}` - one of a list or an integer range
    * `{:struct, module}` - a struct of `module`
    * `{:list, type}` - a proper list of values of `type`
    * `{:or, types}` - the first type that accepts the value
    * `{:custom, fun}` - `fun.(value)` returns `true` (accepted), `{:ok, converted}`
      (accepted and converted), or anything else (refused)
  """
  @type type() ::
          :any
          | :boolean
          | :atom
          | :string
          | :pid
          | :pos_integer
          | :non_neg_integer
          | nil
          | :ip_address
          | :host
          | :name
          | {:in, Enumerable.t()}
          | {:struct, module()}
          | {:list, type()}
          | {:or, [type()]}
          | {:custom, (term() -> boolean() | {:ok, term()} | term())}

  @typedoc "A key's spec: `type:`, `required:`, `default:`."
  @type spec() :: [{:type, type()} | {:required, boolean()} | {:default, term()}]

  @typedoc "A schema: keys and their specs."
  @type schema() :: [{atom(), spec()}]

  @typedoc "The errors of `validate/2`."
  @type error() ::
          {:invalid_argument, :options} | {:invalid_option, atom()} | {:missing_option, atom()}

  @doc """
  Checks `opts` against `schema`. Returns the options in the order given (values
  converted by `{:custom, fun}` types) followed by the defaults of the keys left out, or
  the first error (see the module documentation).

      iex> tracks = fn kind -> if kind in [:rtp, :sample], do: {:ok, {:tracks, kind}} end
      iex> schema = [audio: [type: {:in, [nil, :sendrecv, :recvonly]}], tracks: [type: {:custom, tracks}, default: :sample]]
      iex> Specter.Options.validate([audio: :recvonly], schema)
      {:ok, [audio: :recvonly, tracks: {:tracks, :sample}]}
      iex> Specter.Options.validate([audio: :loud], schema)
      {:error, {:invalid_option, :audio}}
      iex> Specter.Options.validate([{:audio, nil} | :tail], schema)
      {:error, {:invalid_argument, :options}}
  """
  @spec validate(term(), schema()) :: {:ok, keyword()} | {:error, error()}
  def validate(opts, schema) do
    if Keyword.keyword?(opts) do
      with {:ok, given} <- check_given(opts, schema, []),
           {:ok, rest} <- check_absent(opts, schema, []) do
        {:ok, given ++ rest}
      end
    else
      {:error, {:invalid_argument, :options}}
    end
  end

  defp check_given([], _schema, acc), do: {:ok, Enum.reverse(acc)}

  defp check_given([{key, value} | opts], schema, acc) do
    case List.keyfind(schema, key, 0) do
      nil ->
        {:error, {:invalid_option, key}}

      {^key, spec} ->
        if is_nil(value) and Keyword.get(spec, :required, false) do
          {:error, {:missing_option, key}}
        else
          case check(value, Keyword.get(spec, :type, :any)) do
            {:ok, value} -> check_given(opts, schema, [{key, value} | acc])
            :error -> {:error, {:invalid_option, key}}
          end
        end
    end
  end

  defp check_absent(_opts, [], acc), do: {:ok, Enum.reverse(acc)}

  defp check_absent(opts, [{key, spec} | schema], acc) do
    cond do
      Keyword.has_key?(opts, key) ->
        check_absent(opts, schema, acc)

      Keyword.get(spec, :required, false) ->
        {:error, {:missing_option, key}}

      Keyword.has_key?(spec, :default) ->
        case check(spec[:default], Keyword.get(spec, :type, :any)) do
          {:ok, value} -> check_absent(opts, schema, [{key, value} | acc])
          :error -> {:error, {:invalid_option, key}}
        end

      true ->
        check_absent(opts, schema, acc)
    end
  end

  @doc """
  Checks one value against a `t:type/0`: `{:ok, value}` (converted by a `{:custom, fun}`
  type) or `:error`.

      iex> Specter.Options.check({127, 0, 0, 1}, :ip_address)
      {:ok, {127, 0, 0, 1}}
      iex> Specter.Options.check(["a", :b], {:list, :string})
      :error
      iex> Specter.Options.check(nil, {:or, [nil, :pos_integer]})
      {:ok, nil}
  """
  @spec check(term(), type()) :: {:ok, term()} | :error
  def check(value, type) do
    case type do
      {:custom, fun} -> custom(fun.(value), value)
      {:or, types} -> Enum.find_value(types, :error, &ok(check(value, &1)))
      {:list, type} -> list(value, type)
      type -> if simple?(value, type), do: {:ok, value}, else: :error
    end
  end

  defp custom(true, value), do: {:ok, value}
  defp custom({:ok, converted}, _value), do: {:ok, converted}
  defp custom(_, _value), do: :error

  defp ok({:ok, _} = result), do: result
  defp ok(:error), do: nil

  defp list(value, type) do
    if proper_list?(value) do
      Enum.reduce_while(value, {:ok, []}, fn v, {:ok, acc} ->
        case check(v, type) do
          {:ok, v} -> {:cont, {:ok, [v | acc]}}
          :error -> {:halt, :error}
        end
      end)
      |> case do
        {:ok, values} -> {:ok, Enum.reverse(values)}
        :error -> :error
      end
    else
      :error
    end
  end

  defp simple?(_value, :any), do: true
  defp simple?(value, :boolean), do: is_boolean(value)
  defp simple?(value, :atom), do: is_atom(value)
  defp simple?(value, :string), do: is_binary(value)
  defp simple?(value, :pid), do: is_pid(value)
  defp simple?(value, :pos_integer), do: is_integer(value) and value > 0
  defp simple?(value, :non_neg_integer), do: is_integer(value) and value >= 0
  defp simple?(value, nil), do: is_nil(value)
  defp simple?(value, :ip_address), do: :inet.is_ip_address(value)
  defp simple?(value, :host), do: :inet.is_ip_address(value) or host_name?(value)
  defp simple?(value, :name), do: name?(value)
  defp simple?(value, {:in, values}), do: Enum.member?(values, value)
  defp simple?(value, {:struct, module}), do: is_struct(value, module)

  defp host_name?([_ | _] = name),
    do: proper_list?(name) and Enum.all?(name, &(is_integer(&1) and &1 in 33..126))

  defp host_name?(_), do: false

  defp name?(name) when is_atom(name), do: true
  defp name?({:global, _}), do: true
  defp name?({:via, module, _}) when is_atom(module), do: true
  defp name?(_), do: false

  @doc """
  Whether `term` is a proper list (`[]`, or cells that end in `[]`); unlike `is_list/1`,
  an improper list such as `[1 | 2]` is not.

      iex> Specter.Options.proper_list?([1, 2])
      true
      iex> Specter.Options.proper_list?([1 | 2])
      false
      iex> Specter.Options.proper_list?(:nope)
      false
  """
  @spec proper_list?(term()) :: boolean()
  def proper_list?([]), do: true
  def proper_list?([_ | tail]), do: proper_list?(tail)
  def proper_list?(_), do: false
end
