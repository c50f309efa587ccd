#!/usr/bin/env bash
# Tape benchmarks, each against its physical reference in the same run (BENCHMARKS.md).
# usage: bench/tape.sh [ROUNDS] [WORKDIR]   (needs: cargo build --release; --example tape_latency)
set -euo pipefail
rounds=${1:-3}
work=${2:-$(mktemp -d)}
bin=${CARGO_TARGET_DIR:-target}/release/tapedeck
lat=${CARGO_TARGET_DIR:-target}/release/examples/tape_latency
mkdir -p "$work"
cd "$work"
seconds() { python3 -c "import json,sys; print(json.load(sys.stdin)['seconds'])"; }
for r in $(seq "$rounds"); do
  rm -rf tp ddf; sync
  s=$("$bin" record --source 'sim:daq?raw=true&pace=max&blocks=3000' --tape tp --fsync interval:10ms \
        --compression none -q --progress never --summary-json - | seconds)
  b=$(du -sb tp | cut -f1)
  sync
  d=$( { /usr/bin/time -f "%e" dd if=/dev/zero of=ddf bs=1M count=$((b / 1048576)) conv=fdatasync 2>&1 >/dev/null; } | tail -1)
  db=$(( (b / 1048576) * 1048576 ))
  python3 -c "t=$b/$s; d=$db/$d; print(f'round $r daq-block tape {t/1e6:.1f} MB/s, dd {d/1e6:.1f} MB/s, ratio {t/d:.2f}')"
  rm -rf ta; sync
  "$bin" record --source 'sim:alicat?n=1000000' --tape ta --fsync always -q --progress never --summary-json - \
    | python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"round $r alicat fsync=always {d['rows_per_sec']:,.0f} rows/s, acknowledged {d['tape']['acknowledged']:,}\")"
  cat tp/* > /dev/null
  s=$("$bin" replay tp --sink null: -q --summary-json - | seconds)
  python3 -c "print(f'round $r replay to null: {$b/$s/1e9:.2f} GB/s from page cache')"
  "$lat" "$work/lat" 2000 | sed "s/^/round $r /"
done
rm -rf tp ta ddf lat
