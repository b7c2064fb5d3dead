#!/usr/bin/env bash
# The daemon at size with every broker unreachable: the cost of the matrix itself (series,
# scrape, status document, memory, CPU), without any broker's capacity in the way.
#
#   benches/scale-unreachable.sh [BINARY] [TARGETS] [TENANTS] [INTERVAL] [SECONDS] [PORT]
#
# Defaults: target/release/crossprobe, 50 AMQP targets x 200 tenants = 10,000 cells, 5s
# interval, measured after SECONDS=60 of running, listening on PORT (default: a free one).
# Every target points at 127.0.0.1:9 (discard; nothing listens), so every cell reports
# `connect_failed` each interval. Prints one line per figure: /metrics time (plain and gzip,
# best of 5), size, series, series per cell; /api/status time (best of 5) and size; resident
# memory and per cell; CPU share of a core over the last SECONDS/2.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
binary=$(readlink -f "${1:-$root/target/release/crossprobe}")
targets=${2:-50}
tenants=${3:-200}
interval=${4:-5s}
seconds=${5:-60}
port=${6:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
work=$(mktemp -d)
pid=
cleanup() {
    [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

{
    printf '[daemon]\nlisten = "127.0.0.1:%s"\ninstance = "scale-unreachable"\n' "$port"
    printf '[probe]\ninterval = "%s"\ntimeout = "1s"\n' "$interval"
    for ((i = 0; i < targets; i++)); do
        printf '[[targets]]\nname = "rabbit-%s"\nprotocol = "amqp"\naz = "z%s"\naddresses = ["127.0.0.1:9"]\n' "$i" "$((i % 5))"
    done
    for ((t = 0; t < tenants; t++)); do
        printf '[[tenants]]\nname = "t%s"\namqp = { vhost = "t%s", user = "u%s", password_env = "SCALE_PASSWORD" }\n' "$t" "$t" "$t"
    done
} > "$work/scale.toml"
export SCALE_PASSWORD=unused
"$binary" run --config "$work/scale.toml" > "$work/log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 600); do curl -sf "$url/healthz" > /dev/null && break; sleep 0.1; done
sleep $((seconds / 2))
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(cpu)
sleep $((seconds - seconds / 2))
c1=$(cpu)
best() { # best time in ms of 5 requests, and the size of the last
    local best=999999 size=0
    for _ in 1 2 3 4 5; do
        read -r t s < <(curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "$@")
        t=$(awk -v t="$t" 'BEGIN {printf "%.1f", t * 1000}')
        best=$(awk -v a="$best" -v b="$t" 'BEGIN {print (b < a) ? b : a}')
        size=$s
    done
    echo "$best $size"
}
cells=$((targets * tenants))
read -r mt ms < <(best "$url/metrics")
read -r gt gs < <(best -H 'Accept-Encoding: gzip' "$url/metrics")
series=$(curl -s "$url/metrics" | grep -vc '^#')
read -r st ss < <(best "$url/api/status")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "cells $cells, interval $interval, after ${seconds}s, binary $binary"
echo "/metrics: ${mt} ms, $ms bytes; gzip: ${gt} ms, $gs bytes"
echo "series: $series, per cell $(awk -v s="$series" -v c="$cells" 'BEGIN {printf "%.1f", s / c}')"
echo "/api/status: ${st} ms, $ss bytes"
echo "RSS: $((rss / 1024)) MiB, per cell $(awk -v r="$rss" -v c="$cells" 'BEGIN {printf "%.1f", r / c}') KiB"
echo "CPU: $(awk -v a="$c0" -v b="$c1" -v s="$((seconds - seconds / 2))" 'BEGIN {printf "%.0f", (b - a) / s}')% of a core"
