# The native compiler must exist before `lib/` compiles, also when Specter is a dependency.
Code.require_file("mix/tasks/compile.specter_nif.ex", __DIR__)

defmodule Specter.MixProject do
  use Mix.Project

  @version "0.6.0"

  def project do
    [
      app: :specter,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:specter_nif] ++ Mix.compilers(),
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      docs: [main: "Specter"],
      description: "Server-side WebRTC peer connections for Elixir, on a Rust NIF (webrtc-rs)",
      test_coverage: [summary: [threshold: 0]]
    ]
  end

  def application do
    [extra_applications: [:logger, :crypto]]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
