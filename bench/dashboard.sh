#!/usr/bin/env bash
# Dashboard cost over a slow link, measured from outside wick. Runs bench/dashboard.toml (a real
# one-minute fine-tuning run) --headless and with the dashboard in a tmux pseudo-terminal at
# 80x24 and 200x60, interleaved, REPEATS times, and reports for each dashboard run:
#   - bytes the dashboard wrote to the terminal (tmux pipe-pane: every byte the pane received),
#     per second of training (first to last event of the run);
#   - CPU seconds of the dashboard process itself (/proc/PID/stat utime+stime, read just before
#     it quits; the training runs in a separate `wick serve` process) and that as a share of
#     the machine's CPU time over the run (wall x cores);
#   - training images/s (the run's Finished event) against the median of the headless runs.
# Usage: bench/dashboard.sh [REPEATS=2] [FPS]   (needs tmux and python3; builds the release
# binary; FPS overrides [ui] fps through a copy of the config)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-2}
cargo build --release -q
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/wick
cfg=$PWD/bench/dashboard.toml
if [ -n "${2:-}" ]; then
  cfg=$PWD/bench/.dashboard-fps.toml
  { cat bench/dashboard.toml; printf '\n[ui]\nfps = %s\n' "$2"; } > "$cfg"
fi
runs=$PWD/runs/bench-dashboard
work=$(mktemp -d)
trap 'tmux kill-session -t wickbench 2>/dev/null || true; rm -rf "$work"' EXIT
cores=$(nproc)
results=$work/results.tsv

newest_run() { ls -td "$runs"/*/ 2>/dev/null | head -1; }
# seconds (first to last event) and images/s (Finished event) of a finished run
run_stats() { python3 - "$1/events.jsonl" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
fin = [e for e in ev if e["event"] == "finished"]
print((ev[-1]["at_ms"] - ev[0]["at_ms"]) / 1000, fin[-1]["summary"]["images_per_s"])
PY
}

headless() {
  "$bin" train "$cfg" --headless >/dev/null 2>&1
  read -r secs ips < <(run_stats "$(newest_run)")
  printf 'headless\t%s\t%s\t-\t-\t%s\n' "$secs" "$ips" "$(cut -d' ' -f1 /proc/loadavg)" >> "$results"
}

dashboard() {
  local size=$1 w=${1%x*} h=${1#*x} before run pid ticks
  before=$(newest_run)
  tmux kill-session -t wickbench 2>/dev/null || true
  # The pane waits a second so that pipe-pane is attached before the first byte.
  tmux new-session -d -s wickbench -x "$w" -y "$h" "sleep 1; TERM=xterm-256color exec $bin train $cfg"
  tmux pipe-pane -t wickbench -o "cat > $work/bytes"
  pid=$(tmux display -p -t wickbench '#{pane_pid}')
  until run=$(newest_run) && [ "$run" != "$before" ] && grep -q '"event":"finished"' "$run/events.jsonl" 2>/dev/null; do
    sleep 0.5
  done
  sleep 1
  ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  tmux send-keys -t wickbench q
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  tmux kill-session -t wickbench 2>/dev/null || true
  read -r secs ips < <(run_stats "$run")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$size" "$secs" "$ips" "$(stat -c %s "$work/bytes")" \
    "$(echo "$ticks / $(getconf CLK_TCK)" | bc -l)" "$(cut -d' ' -f1 /proc/loadavg)" >> "$results"
}

for ((i = 0; i < repeats; i++)); do
  headless
  dashboard 80x24
  dashboard 200x60
done

python3 - "$results" "$cores" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
cores = int(sys.argv[2])
base = statistics.median(float(r[2]) for r in rows if r[0] == "headless")
print(f"{'mode':<9} {'seconds':>8} {'img/s':>8} {'vs headless':>11} {'bytes':>8} {'bytes/s':>8} {'dash CPU s':>10} {'CPU share':>9} {'load':>5}")
for mode, secs, ips, nbytes, cpu, load in rows:
    secs, ips = float(secs), float(ips)
    if mode == "headless":
        print(f"{mode:<9} {secs:8.1f} {ips:8.1f} {ips / base:11.3f} {'-':>8} {'-':>8} {'-':>10} {'-':>9} {load:>5}")
    else:
        nbytes, cpu = int(nbytes), float(cpu)
        print(f"{mode:<9} {secs:8.1f} {ips:8.1f} {ips / base:11.3f} {nbytes:8d} {nbytes / secs:8.0f} "
              f"{cpu:10.2f} {100 * cpu / (secs * cores):8.2f}% {load:>5}")
PY
