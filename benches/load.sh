#!/usr/bin/env bash
# Load benchmark of the whole path: the release binary over TLS, HTTP/1.1 keep-alive (what
# the API server uses) and HTTP/2, 16 and 64 connections, against a minimal rustls server
# that returns a fixed answer (examples/fixed_answer.rs) on the same stack, and the same
# server parsing each body with serde_json first (the floor of any server that reads the
# review). Prints Markdown tables; docs/performance.md has the method and the numbers.
#
#   bash benches/load.sh [seconds-per-run]      (default 10)
#   WORKERS=2 bash benches/load.sh               (runtime worker threads of every server)
#
# WORKERS (default 1) sets TOKIO_WORKER_THREADS for the three servers alike. One worker leaves
# the other core to the load generator, as a webhook pod with a CPU limit of one core or less
# would run; with two, servers and load generator overcommit the two cores and preempt each
# other, which shows in the tails of all three servers.
#
# Installs oha (cargo install) under .tools/ when it is missing. Loopback only; every run is
# bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-10}
export TOKIO_WORKER_THREADS=${WORKERS:-1}
tools="$root/.tools"
export PATH="$tools/bin:$PATH"
if ! command -v oha >/dev/null; then
  cargo install oha --locked --root "$tools" >&2
fi
command -v python3 >/dev/null || { echo "python3 is needed to read oha's JSON" >&2; exit 1; }

cargo build --release --locked --bin pullsecret-injector --example fixed_answer >&2
bin="$root/target/release/pullsecret-injector"
fixed="$root/target/release/examples/fixed_answer"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

bash certs-scripts/gen-certs.sh --host 127.0.0.1 --host localhost --out "$work/certs" >/dev/null 2>&1
body="$work/review.json"
cp tests/data/deployment-pod.json "$body"

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
wait_port() {
  for _ in $(seq 1 500); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.01
  done
  echo "port $1 did not open" >&2; exit 1
}

# Start the webhook and time it to ready: spawn to the first accepted connection, and the
# process's own measure (config + certificate loaded, listening).
start_ns=$(date +%s%N)
"$bin" --log-format json --log-level info serve --config examples/config.yaml --no-sync \
  --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" \
  --listen 127.0.0.1:18443 --metrics-listen 127.0.0.1:19090 2>"$work/webhook.log" &
webhook=$!; pids+=("$webhook")
wait_port 18443
ready_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
internal_ready=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    d=json.loads(l)
    if d.get("message")=="serving": print(d["ready_ms"])' "$work/webhook.log")
"$fixed" 127.0.0.1:18444 "$work/certs/tls.crt" "$work/certs/tls.key" 2>/dev/null &
pids+=($!)
"$fixed" 127.0.0.1:18445 "$work/certs/tls.crt" "$work/certs/tls.key" --parse 2>/dev/null &
pids+=($!)
wait_port 18444
wait_port 18445
sleep 0.5
idle_kib=$(rss "$webhook")

run() { # name port proto conns -> "rps p50 p99 max errors"
  local port=$2 proto=$3 conns=$4 extra=()
  [ "$proto" = h2 ] && extra=(--http2)
  oha --no-tui --output-format json -z "${secs}s" -c "$conns" "${extra[@]}" --insecure \
    -m POST -H 'content-type: application/json' -D "$body" \
    "https://127.0.0.1:$port/mutate?timeout=2s" > "$work/out.json"
  python3 - "$work/out.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
# oha cuts the requests still in flight when the duration ends: not server errors.
errors = sum(v for k, v in d.get("errorDistribution", {}).items() if k != "aborted due to deadline")
errors += sum(v for k, v in codes.items() if k != "200")
ms = lambda x: f"{x * 1000:.2f}"
print(f'{s["requestsPerSec"]:.0f} {ms(p["p50"])} {ms(p["p99"])} {ms(s["slowest"])} {errors}')
PY
}

echo "| server | protocol | connections | req/s | p50 ms | p99 ms | max ms | errors |"
echo "|---|---|---|---|---|---|---|---|"
declare -A result
for proto in h1 h2; do
  for conns in 16 64; do
    for server in webhook fixed parse-only; do
      case $server in webhook) port=18443 ;; fixed) port=18444 ;; *) port=18445 ;; esac
      read -r rps p50 p99 max errors < <(run "$server" "$port" "$proto" "$conns")
      result[$server-$proto-$conns]="$rps $p99"
      echo "| $server | $proto | $conns | $rps | $p50 | $p99 | $max | $errors |"
    done
  done
done
peak_kib=$(hwm "$webhook")

echo
echo "| ratio to the fixed answer | webhook req/s | webhook p99 | parse-only req/s | parse-only p99 |"
echo "|---|---|---|---|---|"
for proto in h1 h2; do
  for conns in 16 64; do
    read -r wr wp <<<"${result[webhook-$proto-$conns]}"
    read -r fr fp <<<"${result[fixed-$proto-$conns]}"
    read -r pr pp <<<"${result[parse-only-$proto-$conns]}"
    echo "| $proto, $conns connections | $(python3 -c "print(f'{$wr/$fr:.2f} | {$wp/$fp:.2f} | {$pr/$fr:.2f} | {$pp/$fp:.2f}')") |"
  done
done
echo
echo "webhook: ready in ${ready_ms} ms from spawn to first accepted connection (${internal_ready} ms by its own clock); RSS idle $((idle_kib / 1024)) MiB ($idle_kib KiB), peak under load $((peak_kib / 1024)) MiB ($peak_kib KiB)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); body: tests/data/deployment-pod.json ($(wc -c < "$body") bytes); ${secs}s per run; $TOKIO_WORKER_THREADS runtime worker thread(s) per server; load generator and servers share the machine"
