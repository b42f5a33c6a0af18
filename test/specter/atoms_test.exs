defmodule Specter.AtomsTest do
  # What a caller can receive is a closed set, listed in native/specter_nif/src/atoms.rs:
  # every error reason is in `Specter`'s error table, every failure tag in a module's @type.
  use ExUnit.Case, async: true

  @atoms_rs Path.expand("../../native/specter_nif/src/atoms.rs", __DIR__)

  # The atoms of the section of atoms.rs whose comment starts with `heading`.
  defp section(heading) do
    text = File.read!(@atoms_rs)
    [_, after_heading] = String.split(text, "// " <> heading, parts: 2)
    [body | _] = String.split(after_heading, "\n\n", parts: 2)
    [_comment_rest | lines] = String.split(body, "\n")

    lines
    |> Enum.flat_map(&String.split(&1, ","))
    |> Enum.map(&String.trim/1)
    |> Enum.reject(&(&1 == ""))
    |> Enum.map(&String.to_atom/1)
  end

  defp type_atoms(module) do
    {:ok, types} = Code.Typespec.fetch_types(module)

    for {_kind, {_name, ast, _args}} <- types,
        atom <- atoms_in(ast),
        uniq: true,
        do: atom
  end

  defp atoms_in({:atom, _, atom}), do: [atom]
  defp atoms_in(tuple) when is_tuple(tuple), do: tuple |> Tuple.to_list() |> atoms_in()
  defp atoms_in(list) when is_list(list), do: Enum.flat_map(list, &atoms_in/1)
  defp atoms_in(_), do: []

  test "every error reason atoms.rs lists is in Specter's error table" do
    {:docs_v1, _, _, _, %{"en" => moduledoc}, _, _} = Code.fetch_docs(Specter)
    reasons = section("Error reasons")
    assert :not_found in reasons and :runtime_unavailable in reasons

    for reason <- reasons do
      assert moduledoc =~ "`:#{reason}`" or moduledoc =~ "`{:#{reason}, ",
             "#{inspect(reason)} is not in Specter's error table"
    end
  end

  test "every failure tag atoms.rs lists is in the @type of the module that sends it" do
    tags = section("Failures of asynchronous operations")
    assert length(tags) > 20

    typed =
      [Specter.PeerConnection, Specter.RtpTransceiver, Specter.DataChannel, Specter.MediaFile]
      |> Enum.flat_map(&type_atoms/1)

    for tag <- tags, do: assert(tag in typed, "#{inspect(tag)} is in no module's @type")
  end
end
