#!/usr/bin/env bash
# The PostgreSQL target against the DuckDB target, in one run, on the same generated rows from a standalone
# emulator (its own process): a full sync into each, then a sync with nothing changed, with wall time, CPU-seconds and peak RSS of the dobsob process (GNU time), and the PostgreSQL server's
# CPU-seconds for its load. Prints PostgreSQL / DuckDB ratios. A private server is started in a temporary
# directory (unix socket only) and stopped at the end.
#
#   bench/postgres.sh [ROWS] [COLUMNS]        (default 200000 rows, 46 columns; run from the repository)
#
# Builds nothing itself: run `cargo build --release` first (the target directory of .ci/run is used).
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-200000}
cols=${2:-46}
bin="${CARGO_TARGET_DIR:-$HOME/.cache/dobsob/target}/release"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/dobsob" ] && [ -x "$bin/socrata-emulator" ] || { echo "build first: cargo build --release" >&2; exit 2; }
[ -n "$pgbin" ] || { echo "no PostgreSQL server binaries (apt-get install postgresql)" >&2; exit 2; }
work=$(mktemp -d)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then chown postgres "$work"; as_pg=(runuser -u postgres --); fi
cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  kill "$emu" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -A trust -U dobsob --no-sync >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -o "-p $port -k $work -c listen_addresses='' -c log_min_duration_statement=${PG_LOG_MS:-100000}" -w -l "$work/pg.log" start >/dev/null
"${as_pg[@]}" "$pgbin/createdb" -h "$work" -p "$port" -U dobsob bench
url="postgres://dobsob@/bench?host=$work&port=$port&schema=nyc"
"$bin/socrata-emulator" --port 0 --synthetic "bnch-0001:$rows" --columns "$cols" > "$work/emu.out" &
emu=$!
for _ in $(seq 100); do grep -q http "$work/emu.out" 2>/dev/null && break; sleep 0.1; done
portal=$(grep -o 'http://[0-9.:]*' "$work/emu.out" | head -1)
server_cpu() { # CPU-seconds of the server so far: the postmaster's own and its reaped backends' (cutime, cstime)
  awk '{print ($14 + $15 + $16 + $17) / 100}' "/proc/$(head -1 "$work/pg/postmaster.pid")/stat"; }
run() { # TARGET STEP: one sync, its figures on one line
  local target=$1 step=$2 extra=()
  [ "$target" = postgres ] && extra=(--warehouse "$url")
  local before; before=$(server_cpu)
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$bin/dobsob" --data-dir "$work/data-$target" --portal "$portal" \
    --catalog fixtures/synthetic-catalog.toml -q sync "${extra[@]}" --throttle 0 --max-requests-per-second 1000 >/dev/null
  local after; after=$(server_cpu)
  read -r wall user sys rss < "$work/time"
  # The writer's busy seconds by step, from the run's report.
  python3 - "$work/data-$target/reports" <<'PY' >> "$work/steps"
import json, pathlib, sys
r = max((json.loads(p.read_text()) for p in pathlib.Path(sys.argv[1]).glob("*.json")), key=lambda r: r["run_id"])
t = r["performance_metrics"]["breakdown"]
keys = ["stage_s", "insert_s", "uncastable_s", "commit_s", "swap_s", "publish_s"]
print(sys.argv[1].split("/")[-2], " ".join(f"{k[:-2]} {t[k]:.1f}s" for k in keys if t.get(k, 0) >= 0.05))
PY
  printf '%-9s %-12s wall %7.1f s  dobsob cpu %7.1f s  peak rss %5d MB  server cpu %6.1f s\n' \
    "$target" "$step" "$wall" "$(echo "$user + $sys" | bc)" "$((rss / 1024))" \
    "$(echo "$after - $before" | bc)" | tee -a "$work/results"
}
for t in duckdb postgres; do run "$t" full; done
# Nothing changed at the source (the standalone emulator takes no edits): metadata and a count each.
for t in duckdb postgres; do run "$t" unchanged; done
echo "writer's steps (seconds busy, full then unchanged):"; sed 's/^/  /' "$work/steps"
# With PG_LOG_MS=N, the statements that took longer than N ms (the server's log).
[ -n "${PG_LOG_MS:-}" ] && grep -o 'duration: [0-9.]* ms  statement: .\{0,160\}' "$work/pg.log" | sort -t: -k2 -rn | head -30
awk '{w[$1" "$2]=$4; c[$1" "$2]=$8} END {
  for (s in w) { split(s, k, " "); if (k[1] == "postgres") {
    d = "duckdb " k[2]; if (w[d] > 0 && c[d] > 0) printf "%-12s postgres/duckdb: wall %.2fx, dobsob cpu %.2fx\n", k[2], w[s]/w[d], c[s]/c[d] } } }' "$work/results"
