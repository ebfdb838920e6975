#!/usr/bin/env bash
# Fuzzes the parsers that face the network or the user (docs/security.md, "Fuzzing").
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Default: 60 seconds for each of hbone_connect zds xds_state config_yaml dns
# waypoint_config, one after
# the other. Uses cargo-fuzz with libFuzzer on the STABLE toolchain and no sanitizer
# (`-s none`: only stable codegen flags, no -Z); installs cargo-fuzz (and a C++ compiler
# for libFuzzer) when missing. The fuzz crate is fuzz/, outside the workspace, with its own
# target dir (fuzz/target). Inputs found along the way go to fuzz/target/corpus/<target>
# (kept between local runs, never committed); the committed seeds in fuzz/corpus/<target>
# are read only. Prints one line per target and exits non-zero if any target crashed,
# hung (-timeout) or ran out of memory; the reproducer's path and the command to replay
# it are printed, and its log stays in fuzz/target/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(hbone_connect zds xds_state config_yaml dns waypoint_config)
seconds=${1:-60}
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (targets: ${all_targets[*]})" >&2
  exit 2
fi
shift $(($# > 0 ? 1 : 0))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  if [[ ! " ${all_targets[*]} " =~ " $t " ]]; then
    echo "unknown fuzz target $t (known: ${all_targets[*]})" >&2
    exit 2
  fi
done

# Stable only, whatever else is installed or pinned: cargo-fuzz runs `cargo build`, which
# inherits this.
export RUSTUP_TOOLCHAIN=stable
CARGO_FUZZ_VERSION=0.13.2

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v c++ >/dev/null 2>&1; then
  echo "fuzz: installing a C++ compiler (libfuzzer-sys builds libFuzzer)"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

fuzz_flags=(--sanitizer none)
echo "fuzz: building ${targets[*]} ($(rustc --version))"
build_start=$(date +%s)
for t in "${targets[@]}"; do
  cargo fuzz build "${fuzz_flags[@]}" "$t"
done
echo "fuzz: built in $(($(date +%s) - build_start)) s"
bin_dir="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

mkdir -p fuzz/target/logs
failed=0
summary=()
for t in "${targets[@]}"; do
  work="fuzz/target/corpus/$t"
  seeds="fuzz/corpus/$t"
  log="fuzz/target/logs/$t.log"
  times="fuzz/target/logs/$t.time"
  mkdir -p "$work" "$seeds" "fuzz/artifacts/$t"
  echo "fuzz: $t for $seconds s (log: $log)"
  rc=0
  TIMEFORMAT='%R %U %S'
  # The binary itself rather than `cargo fuzz run`, so the time is the fuzzing alone.
  { time "$bin_dir/$t" -artifact_prefix="fuzz/artifacts/$t/" \
      -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
      "$work" "$seeds" >"$log" 2>&1 || rc=$?; } 2>"$times"
  read -r _wall user sys <"$times" || true
  cpu=$(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN { printf "%.0f", u + s }')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "$work" -type f | wc -l)
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  if [ "$rc" -ne 0 ] || [ -n "$artifact" ]; then
    failed=1
    kind=$(grep -m1 -oE 'deadly signal|panicked at|ERROR: libFuzzer: [a-z-]+' "$log" || echo "exit $rc")
    line=$(printf '%-14s %5s s  %9s execs  %6s exec/s  corpus %5s  crashes 1 (%s): %s' \
      "$t" "$cpu" "${execs:-?}" "${rate:-?}" "$corpus" "$kind" "${artifact:-see $log}")
    echo "fuzz: FOUND A CRASH in $t; from $log:"
    # The panic message (or libFuzzer's error) and the start of the stack, without std's
    # source lines.
    sed -n '/panicked at\|==[0-9]*== ERROR: libFuzzer/,/^────/p' "$log" \
      | grep -v -e '^ *at /rustc/' -e '^────' | head -40
    [ -z "$artifact" ] || echo "fuzz: replay: cargo +stable fuzz run -s none $t $artifact  (shrink: cargo +stable fuzz tmin -s none $t $artifact)"
  else
    line=$(printf '%-14s %5s s  %9s execs  %6s exec/s  corpus %5s  crashes 0' \
      "$t" "$cpu" "${execs:-?}" "${rate:-?}" "$corpus")
  fi
  echo "fuzz: $line"
  summary+=("$line")
done

echo
echo "fuzz summary ($seconds s per target; CPU-seconds, executions, crashes):"
printf '  %s\n' "${summary[@]}"
exit "$failed"
