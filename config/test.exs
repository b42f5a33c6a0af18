import Config

# Tests, doctests and benchmarks only ever talk to 127.0.0.1 / ::1: connections bind loopback,
# datagrams to anything else are refused and no host name is resolved, so a STUN or TURN URL
# in an example is never contacted. mDNS stays off (the default).
config :specter, loopback_only: true
