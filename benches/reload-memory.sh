#!/usr/bin/env bash
# Resident memory of a running daemon across many reloads.
#
#   benches/reload-memory.sh CHANGE RELOADS [BINARY]
#
# Runs BINARY (default target/release/crossprobe) on the local example's 12 cells against the
# local zones (`deploy/local/crossprobe-local up` first; CROSSPROBE_LOCAL_PORT_BASE and
# CROSSPROBE_LOCAL_STATE are honoured), then sends RELOADS SIGHUPs 0.25 s apart, the file
# alternating between the example and the example with CHANGE:
#   clients  [probe] timeout 500ms -> 400ms: every cell restarted, every client replaced
#   cells    [probe] message_size 256 -> 300: every cell restarted, the clients kept
#   none     a comment: nothing restarted
# Prints the resident size (VmRSS) before, after each quarter, and at the end, with the open
# file descriptors and threads. Run under `heaptrack` with WRAP="heaptrack -o FILE".
set -euo pipefail

change=${1:?usage: $0 clients|cells|none RELOADS [BINARY]}
reloads=${2:?usage: $0 clients|cells|none RELOADS [BINARY]}
root=$(cd "$(dirname "$0")/.." && pwd)
binary=$(readlink -f "${3:-$root/target/release/crossprobe}")
work=$(mktemp -d)
pid=
cleanup() {
    [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

eval "$("$root/deploy/local/crossprobe-local" env)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -e "s/127.0.0.1:9464/127.0.0.1:$port/" \
    -e "s/127.0.0.1:19092/$CROSSPROBE_KAFKA_A/; s/127.0.0.1:19093/$CROSSPROBE_KAFKA_B/; s/127.0.0.1:19094/$CROSSPROBE_KAFKA_C/" \
    -e "s/127.0.0.1:19672/$CROSSPROBE_AMQP_A/; s/127.0.0.1:19673/$CROSSPROBE_AMQP_B/; s/127.0.0.1:19674/$CROSSPROBE_AMQP_C/" \
    "$root/config/examples/local.toml" > "$work/a.toml"
case $change in
    clients) sed 's/^timeout = "500ms"$/timeout = "400ms"/' "$work/a.toml" > "$work/b.toml" ;;
    cells) sed 's/^message_size = 256$/message_size = 300/' "$work/a.toml" > "$work/b.toml" ;;
    none) { cat "$work/a.toml"; echo "# changed"; } > "$work/b.toml" ;;
    *) echo "unknown change '$change' (clients, cells, none)" >&2; exit 64 ;;
esac
cmp -s "$work/a.toml" "$work/b.toml" && { echo "the change did not apply" >&2; exit 1; }
cp "$work/a.toml" "$work/live.toml"

# shellcheck disable=SC2086 # WRAP is a command line
RUST_LOG=info,lapin=warn ${WRAP:-} "$binary" run --config "$work/live.toml" > "$work/log" 2>&1 &
launcher=$!
sleep 10
# Under a wrapper the daemon is another process: the one running this run's own config file.
pid=$(pgrep -n -f "^$binary run --config $work/live.toml" || echo "$launcher")
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
echo "change $change, $reloads reloads, $binary"
echo "start: rss $(rss) kB"
for ((i = 1; i <= reloads; i++)); do
    if ((i % 2)); then cp "$work/b.toml" "$work/live.toml"; else cp "$work/a.toml" "$work/live.toml"; fi
    kill -HUP "$pid"
    sleep 0.25
    if ((reloads >= 4 && i % (reloads / 4) == 0)); then echo "after $i: rss $(rss) kB"; fi
done
sleep 3
echo "end: rss $(rss) kB, fds $(find "/proc/$pid/fd" -mindepth 1 | wc -l), threads $(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 | wc -l)"
grep -c "configuration reloaded" "$work/log" | sed 's/^/reloads applied: /' || true
