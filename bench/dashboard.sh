#!/usr/bin/env bash
# Dashboard cost over a slow link: runs a real training run with the dashboard in a tmux
# pseudo-terminal at 80x24 and 200x60, and once --headless, then reports the bytes the
# dashboard wrote to the terminal per second and the training throughput with vs without it.
# Usage: bench/dashboard.sh   (needs tmux; builds the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/wick
cfg=$PWD/bench/dashboard.toml
runs=$PWD/runs/bench-dashboard
rm -rf "$runs"

# images/s of a finished run, from its Finished event.
throughput() { grep '"event":"finished"' "$1/events.jsonl" | sed 's/.*"images_per_s":\([0-9.e+-]*\).*/\1/'; }
# wall seconds of a run: first to last event.
duration() { python3 - "$1/events.jsonl" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print((ev[-1]["at_ms"] - ev[0]["at_ms"]) / 1000)
PY
}

"$bin" train "$cfg" --headless >/dev/null 2>&1
headless_run=$(ls -td "$runs"/*/ | head -1)
printf '%-10s %10s %10s %10s %12s\n' mode seconds bytes bytes/s img/s
printf '%-10s %10.1f %10s %10s %12.1f\n' headless "$(duration "$headless_run")" - - "$(throughput "$headless_run")"
base=$(throughput "$headless_run")

for size in 80x24 200x60; do
  w=${size%x*}; h=${size#*x}
  tmux kill-session -t wickbench 2>/dev/null || true
  tmux new-session -d -s wickbench -x "$w" -y "$h" "TERM=xterm-256color $bin train $cfg"
  # Wait for the run to finish (the dashboard stays open on the final state), then quit.
  sleep 3
  run=$(ls -td "$runs"/*/ | head -1)
  until grep -q '"event":"finished"' "$run/events.jsonl" 2>/dev/null; do sleep 1; done
  sleep 1
  tmux send-keys -t wickbench q 2>/dev/null || true
  sleep 2
  tmux kill-session -t wickbench 2>/dev/null || true
  bytes=$(grep 'dashboard closed' "$run/wick.log" | sed 's/.*bytes=\([0-9]*\).*/\1/' | tail -1)
  secs=$(duration "$run")
  tp=$(throughput "$run")
  printf '%-10s %10.1f %10s %10.0f %12.1f  (%.3f of headless)\n' "$size" "$secs" "$bytes" \
    "$(echo "$bytes / $secs" | bc -l)" "$tp" "$(echo "$tp / $base" | bc -l)"
done
