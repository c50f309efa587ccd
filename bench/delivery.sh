#!/usr/bin/env bash
# Delivery throughput: `record --tape` with each of the five sinks alone, then all five at once.
# The run ends only when every sink holds every row, so rows / wall seconds is the end-to-end
# delivery rate. Prints the median of RUNS runs per configuration and the ratio
# (slowest single sink) / (all five).
#
#   bash bench/delivery.sh [ROWS] [RUNS]        (PostgreSQL from TAPEDECK_TEST_POSTGRES_URL)
set -euo pipefail
ROWS=${1:-1000000}
RUNS=${2:-3}
BIN=${TAPEDECK_BIN:-target/release/tapedeck}
[ -x "$BIN" ] || BIN=${CARGO_TARGET_DIR:-/work/target}/release/tapedeck
PG=${TAPEDECK_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

sink_uri() { # name run
  case $1 in
    csv) echo "csv:$WORK/$2/out.csv" ;;
    jsonl) echo "jsonl:$WORK/$2/out.jsonl" ;;
    sqlite) echo "sqlite:$WORK/$2/out.db?table=flow&create_table=true" ;;
    parquet) echo "parquet:$WORK/$2/parts/?roll_rows=262144" ;;
    postgres) echo "$PG?table=bench_$2&create_table=true" ;;
  esac
}

run() { # label sinks...
  local label=$1; shift
  local times=()
  for r in $(seq 1 "$RUNS"); do
    local id="${label}_$r"
    mkdir -p "$WORK/$id"
    psql "$PG" -qAtc "DROP TABLE IF EXISTS bench_$id; DELETE FROM tapedeck_cursor WHERE target_table = 'public.bench_$id'" >/dev/null 2>&1 || true
    local args=()
    for s in "$@"; do args+=(--sink "$(sink_uri "$s" "$id")"); done
    local t0 t1
    t0=$(date +%s.%N)
    "$BIN" record --source "sim:alicat?n=$ROWS" --tape "$WORK/$id/tape" --batch-size 64 -q --progress never "${args[@]}"
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc -l)")
    psql "$PG" -qAtc "DROP TABLE IF EXISTS bench_$id" >/dev/null 2>&1 || true
    rm -rf "${WORK:?}/$id"
  done
  local median
  median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-10s median %6.2f s  %9.0f rows/s  (runs: %s)\n' "$label" "$median" "$(echo "$ROWS / $median" | bc -l)" "${times[*]}"
  eval "MEDIAN_$label=$median"
}

echo "delivery bench: $ROWS alicat-sample rows, batch 64, tape fsync interval:10ms zstd, $RUNS runs each"
for s in csv jsonl sqlite parquet postgres; do run "$s" "$s"; done
run all csv jsonl sqlite parquet postgres
slowest=0
for s in csv jsonl sqlite parquet postgres; do
  v=$(eval echo "\$MEDIAN_$s")
  if (( $(echo "$v > $slowest" | bc -l) )); then slowest=$v; fi
done
printf 'all five / slowest single sink (time): %.2f  (target <= 2)\n' "$(echo "$MEDIAN_all / $slowest" | bc -l)"
