#!/bin/bash
# The container's entry point: `server ARGS`, `client ARGS`, `health`, or any other fedra command.
#
# The client trains with --sandbox "$FEDRA_SANDBOX" (default off in the image). fedra's own sandbox is
# bubblewrap in new user namespaces, which container runtimes' default seccomp profiles and a non-root,
# capability-less container forbid, so `auto` would only warn on every start. In the image the container is
# the sandbox: a non-root user, no capabilities, a read-only root filesystem (under Kubernetes), and a
# NetworkPolicy that lets a client reach only the server. Set FEDRA_SANDBOX=auto or on where the runtime
# allows user namespaces. A --sandbox given on the command line wins (the last one counts).
set -euo pipefail

role=${1:-}
case "$role" in
  server)
    shift
    # `health` finds the address in this file: the server may bind any address with --bind.
    addr=0.0.0.0:$FEDRA_PORT
    prev=
    for arg in "$@"; do
      case "$arg" in --bind=*) addr=${arg#--bind=};; *) [ "$prev" = --bind ] && addr=$arg;; esac
      prev=$arg
    done
    printf '%s\n' "$addr" > "${TMPDIR:-/tmp}/fedra-server.addr" 2>/dev/null || true
    exec fedra server "$@"
    ;;
  client)
    shift
    exec fedra client --sandbox "${FEDRA_SANDBOX:-off}" "$@"
    ;;
  health)
    # A server: its gRPC port accepts a TCP connection (bash's /dev/tcp: a real connect, no extra tool).
    # A client: PID 1 (the client, exec'd above) is alive and not a zombie.
    if [ -r "${TMPDIR:-/tmp}/fedra-server.addr" ]; then
      addr=$(cat "${TMPDIR:-/tmp}/fedra-server.addr")
      host=${addr%:*} port=${addr##*:}
      host=${host#[} host=${host%]}
      # a wildcard address listens on loopback too
      case "$host" in 0.0.0.0|""|::) host=127.0.0.1;; esac
      exec 3<>"/dev/tcp/$host/$port" || { echo "server $host:$port refuses connections" >&2; exit 1; }
      exec 3<&- 3>&-
      exit 0
    fi
    state=$(awk '/^State:/ {print $2}' /proc/1/status)
    case "$state" in Z|X|"") echo "the fedra process is gone (state ${state:-none})" >&2; exit 1;; esac
    exit 0
    ;;
  "")
    exec fedra --help
    ;;
  *)
    exec fedra "$@"
    ;;
esac
