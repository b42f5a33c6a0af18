defmodule Mix.Tasks.Compile.SpecterNif do
  @shortdoc "Builds Specter's native crate with cargo and installs it under priv/native"
  @moduledoc """
  Builds `native/specter_nif` (a member of the Cargo workspace in `native/`, with
  `native/specter_core`) and installs the shared library as `priv/native/libspecter_nif.so`,
  where `Specter.Native` loads it with `:erlang.load_nif/2`.

  hex.pm (and so the `rustler` Mix package) is not available, so this compiler replaces it.
  It rebuilds only when the crates' content changes: a SHA-256 digest of the workspace's
  `Cargo.toml` and `Cargo.lock` and of every file of `specter_nif` and `specter_core` (plus
  the build profile) is stored next to the library, so touching a file without changing it
  does not trigger a build.

  Environment:

    * `SPECTER_NIF_PROFILE` - `release` (default) or `debug`
    * `SPECTER_NIF_FORCE` - set to `1` to rebuild even if the digest matches
    * `CARGO` - the cargo executable (default: `cargo` on `PATH`, then `~/.cargo/bin/cargo`)

  It works the same when Specter is a `path:` dependency: everything is resolved relative
  to Specter's own `mix.exs`, and cargo's target directory (`native/target`) stays inside
  Specter so every Mix environment shares one build.
  """
  use Mix.Task.Compiler

  @workspace "native"
  @crates ["specter_nif", "specter_core"]
  @lib "libspecter_nif"

  @impl Mix.Task.Compiler
  def run(_args) do
    root = Path.dirname(Mix.Project.project_file())
    crate = Path.join(root, @workspace)
    priv = Path.join(root, "priv/native")
    profile = System.get_env("SPECTER_NIF_PROFILE", "release")
    target = Path.join(priv, @lib <> ".so")
    digest_file = Path.join(priv, @lib <> ".digest")
    digest = digest(crate, profile)

    fresh? =
      File.exists?(target) and File.read(digest_file) == {:ok, digest} and
        System.get_env("SPECTER_NIF_FORCE") != "1"

    result =
      if fresh? do
        :noop
      else
        build(crate, profile, priv, target, digest_file, digest)
      end

    case result do
      :ok ->
        Mix.Project.build_structure()
        {:ok, []}

      :noop ->
        Mix.Project.build_structure()
        {:noop, []}

      {:error, message} ->
        Mix.shell().error(message)
        {:error, [diagnostic(message)]}
    end
  end

  @impl Mix.Task.Compiler
  def clean do
    root = Path.dirname(Mix.Project.project_file())
    File.rm_rf(Path.join(root, "priv/native"))
    :ok
  end

  defp build(crate, profile, priv, target, digest_file, digest) do
    with {:ok, cargo} <- cargo() do
      args = ["build", "--manifest-path", Path.join(crate, "Cargo.toml"), "-p", "specter_nif"]
      args = if profile == "release", do: args ++ ["--release"], else: args
      Mix.shell().info("Compiling native crate specter_nif (#{profile}) with cargo")

      env = [{"CARGO_TARGET_DIR", Path.join(crate, "target")}]

      case System.cmd(cargo, args,
             into: IO.stream(:stdio, :line),
             stderr_to_stdout: true,
             env: env
           ) do
        {_, 0} ->
          built = Path.join([crate, "target", profile, @lib <> so_ext()])
          File.mkdir_p!(priv)
          # Copy then rename, so a running VM that mapped the old file keeps a valid mapping.
          tmp = target <> ".tmp"
          File.cp!(built, tmp)
          File.rename!(tmp, target)
          File.write!(digest_file, digest)
          :ok

        {_, status} ->
          {:error, "cargo build of #{crate}/specter_nif failed with exit status #{status}"}
      end
    end
  end

  defp cargo do
    candidates = [
      System.get_env("CARGO"),
      System.find_executable("cargo"),
      Path.expand("~/.cargo/bin/cargo")
    ]

    case Enum.find(candidates, &(&1 && File.exists?(&1))) do
      nil -> {:error, "cargo not found: install Rust (https://rustup.rs) or set CARGO"}
      path -> {:ok, path}
    end
  end

  defp so_ext do
    case :os.type() do
      {:unix, :darwin} -> ".dylib"
      {:win32, _} -> ".dll"
      _ -> ".so"
    end
  end

  @doc false
  def digest(crate, profile) do
    files =
      ["Cargo.toml", "Cargo.lock"]
      |> Enum.map(&Path.join(crate, &1))
      |> Enum.concat(
        Enum.flat_map(@crates, fn c ->
          [Path.join([crate, c, "Cargo.toml"]) | Path.wildcard(Path.join([crate, c, "src/**/*"]))]
        end)
      )
      |> Enum.filter(&File.regular?/1)
      |> Enum.sort()

    files
    |> Enum.reduce(:crypto.hash_init(:sha256), fn file, acc ->
      rel = Path.relative_to(file, crate)
      acc |> :crypto.hash_update(rel) |> :crypto.hash_update(File.read!(file))
    end)
    |> :crypto.hash_update(profile)
    |> :crypto.hash_final()
    |> Base.encode16(case: :lower)
  end

  defp diagnostic(message) do
    %Mix.Task.Compiler.Diagnostic{
      compiler_name: "specter_nif",
      file: Path.join(File.cwd!(), @workspace),
      message: message,
      position: nil,
      severity: :error
    }
  end
end
