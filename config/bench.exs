import Config

# Benchmarks follow the network rule too: loopback only, no name resolution.
config :specter, loopback_only: true
