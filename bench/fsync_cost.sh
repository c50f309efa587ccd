#!/usr/bin/env bash
# The cost of fdatasync at each file-sink commit: CSV and JSONL delivered from a tape by two
# tapedeck binaries (OLD, e.g. built from the commit before the change, and NEW), interleaved
# round by round. Prints the median of RUNS runs per binary and sink.
#
#   OLD=/tmp/tapedeck-old NEW=target/release/tapedeck bash bench/fsync_cost.sh [ROWS] [RUNS]
set -euo pipefail
ROWS=${1:-1000000}
RUNS=${2:-5}
OLD=${OLD:?set OLD to the tapedeck binary to compare against}
NEW=${NEW:-${CARGO_TARGET_DIR:-target}/release/tapedeck}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
declare -A T
for r in $(seq "$RUNS"); do
  for b in OLD NEW; do
    bin=${!b}
    for s in csv jsonl; do
      d="$W/$b-$s-$r"
      mkdir -p "$d"
      t0=$(date +%s.%N)
      "$bin" record --source "sim:alicat?n=$ROWS" --tape "$d/tape" --batch-size 64 -q \
        --progress never --sink "$s:$d/out.$s"
      t1=$(date +%s.%N)
      T[$b-$s]+="$(echo "$t1 - $t0" | bc -l) "
      rm -rf "$d"
    done
  done
done
for s in csv jsonl; do
  o=$(printf '%s\n' ${T[OLD-$s]} | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  n=$(printf '%s\n' ${T[NEW-$s]} | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-6s old median %6.3f s  new median %6.3f s  new/old %.2f\n' "$s" "$o" "$n" \
    "$(echo "$n / $o" | bc -l)"
done
