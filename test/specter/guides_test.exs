defmodule Specter.GuidesTest do
  # The README is a map: every guide and file it (or a guide) links to exists.
  use ExUnit.Case, async: true

  @root Path.expand("../..", __DIR__)
  @docs [
    "README.md"
    | Path.wildcard(Path.join(@root, "guides/*.md")) |> Enum.map(&Path.relative_to(&1, @root))
  ]

  test "every relative link of the README and the guides names a file that exists" do
    for doc <- @docs,
        [_, target] <-
          Regex.scan(~r/\]\(([^)#:]+)(?:#[^)]*)?\)/, File.read!(Path.join(@root, doc))) do
      path = Path.expand(target, Path.dirname(Path.join(@root, doc)))
      assert File.exists?(path), "#{doc} links to #{target}, which does not exist"
    end
  end

  test "the README stays a map (at most 200 lines)" do
    lines = @root |> Path.join("README.md") |> File.read!() |> String.split("\n")
    assert length(lines) <= 200
  end
end
