#!/usr/bin/env bash
# What `dobsob serve` costs, in one run: the server's memory (RSS) and CPU-seconds idle, while pages are
# loaded, and while a full sync it started runs in it; and, as the baseline measured in the same run, the
# same full sync as a plain `dobsob sync` process (GNU time). Rows come from a standalone emulator (its own
# process, its CPU not counted).
#
#   bench/dashboard.sh [ROWS] [COLUMNS]        (default 200000 rows, 46 columns; run from the repository)
#
# Builds nothing itself: run `cargo build --release` first (the target directory of .ci/run is used).
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-200000}
cols=${2:-46}
bin="${CARGO_TARGET_DIR:-$HOME/.cache/dobsob/target}/release"
[ -x "$bin/dobsob" ] && [ -x "$bin/socrata-emulator" ] || { echo "build first: cargo build --release" >&2; exit 2; }
work=$(mktemp -d)
cleanup() {
  kill "$srv" "$emu" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin/socrata-emulator" --port 0 --synthetic "bnch-0001:$rows" --columns "$cols" > "$work/emu.out" &
emu=$!
for _ in $(seq 100); do grep -q http "$work/emu.out" 2>/dev/null && break; sleep 0.1; done
portal=$(grep -o 'http://[0-9.:]*' "$work/emu.out" | head -1)
common=(--portal "$portal" --catalog fixtures/synthetic-catalog.toml -q)

# The baseline: the same full sync as its own process.
/usr/bin/time -f "%e %U %S %M" -o "$work/time" "$bin/dobsob" --data-dir "$work/cli" "${common[@]}" sync \
  --throttle 0 --max-requests-per-second 1000 >/dev/null
read -r cli_wall cli_user cli_sys cli_rss < "$work/time"

# The server, on a data directory of its own.
mkdir -p "$work/served"
"$bin/dobsob" --data-dir "$work/served" "${common[@]}" serve --listen 127.0.0.1:0 --allow-control \
  > "$work/srv.out" 2>/dev/null &
srv=$!
for _ in $(seq 100); do grep -q http "$work/srv.out" 2>/dev/null && break; sleep 0.1; done
base=$(grep -o 'http://[0-9.:]*' "$work/srv.out" | head -1)
cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$srv/stat"; }
rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$srv/status"; }
hwm() { awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$srv/status"; }

sleep 2
c0=$(cpu); sleep 10; c1=$(cpu)
printf 'idle 10 s           rss %4d MB  cpu %5.2f s\n' "$(rss)" "$(echo "$c1 - $c0" | bc)"

# Pages: the overview (every dataset's status and history) and /metrics, 50 each, one after the other.
c0=$(cpu)
t0=$(date +%s.%N)
for _ in $(seq 50); do curl -sf -o /dev/null "$base/"; curl -sf -o /dev/null "$base/metrics"; done
t1=$(date +%s.%N); c1=$(cpu)
printf '100 page loads      rss %4d MB  cpu %5.2f s  %.1f ms per page\n' "$(rss)" "$(echo "$c1 - $c0" | bc)" \
  "$(echo "($t1 - $t0) * 1000 / 100" | bc -l)"

# A full sync started from the page, sampled every 0.2 s until the run ends.
csrf=$(curl -sf "$base/" | grep -o 'name="csrf" value="[0-9a-f]*"' | head -1 | sed 's/.*value="//; s/"//')
c0=$(cpu)
t0=$(date +%s.%N)
curl -sf -o /dev/null -H "Origin: $base" --data "csrf=$csrf" "$base/control/sync"
sleep 0.5
until curl -sf "$base/api/runs/1.json" | grep -q '"finished_at": "'; do sleep 0.2; done
t1=$(date +%s.%N); c1=$(cpu)
srv_cpu=$(echo "$c1 - $c0" | bc); srv_hwm=$(hwm); cli_cpu=$(echo "$cli_user + $cli_sys" | bc)
printf 'full sync in server wall %6.1f s  cpu %6.1f s  peak rss %4d MB\n' "$(echo "$t1 - $t0" | bc)" \
  "$srv_cpu" "$srv_hwm"
printf 'full sync, own proc wall %6.1f s  cpu %6.1f s  peak rss %4d MB\n' "$cli_wall" "$cli_cpu" \
  "$((cli_rss / 1024))"
printf 'ratio (server / own process): cpu %.2fx, peak rss %.2fx\n' "$(echo "$srv_cpu / $cli_cpu" | bc -l)" \
  "$(echo "$srv_hwm / ($cli_rss / 1024)" | bc -l)"
# The baseline again, after (the order of the two does not favour either).
/usr/bin/time -f "%e %U %S %M" -o "$work/time" "$bin/dobsob" --data-dir "$work/cli2" "${common[@]}" sync \
  --throttle 0 --max-requests-per-second 1000 >/dev/null
read -r w u s m < "$work/time"
printf 'full sync, own proc again wall %6.1f s  cpu %6.1f s  peak rss %4d MB\n' "$w" "$(echo "$u + $s" | bc)" \
  "$((m / 1024))"
c0=$(cpu); sleep 10; c1=$(cpu)
printf 'idle after the sync rss %4d MB  cpu %5.2f s over 10 s\n' "$(rss)" "$(echo "$c1 - $c0" | bc)"
