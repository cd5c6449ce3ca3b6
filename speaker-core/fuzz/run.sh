#!/usr/bin/env bash
# Fuzzes every target of this crate for SECONDS each (default 60), one after the other, one
# libFuzzer job at a time, then prints per target what it ran and whether it crashed.
#
#   speaker-core/fuzz/run.sh [SECONDS]
#
# Each target starts from a copy of seeds/<target>/ in a scratch directory under /tmp (kept, and
# printed, so a crash can be reproduced and minimised), so nothing the fuzzer writes lands in the
# repository. Exits 1 if any target crashed, timed out or ran out of memory.
#
# Environment: CARGO_TARGET_DIR (default /tmp/tgt-fuzz), CARGO_BUILD_JOBS (default 1),
# FUZZ_TOOLCHAIN (default nightly: the sanitizers need it).
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS per target, default 60]" >&2
    exit 2
fi
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target_dir="${CARGO_TARGET_DIR:-/tmp/tgt-fuzz}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    cargo "+$toolchain" install cargo-fuzz --locked -j1
fi
fuzz=(cargo "+$toolchain" fuzz)
# The same flags for build and run, so that run does not rebuild.
flags=(--fuzz-dir "$fuzz_dir" --target-dir "$target_dir" --debug-assertions)

"${fuzz[@]}" build "${flags[@]}"
mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir "$fuzz_dir")
scratch="$(mktemp -d /tmp/ferrolb-fuzz.XXXXXX)"
echo "fuzzing ${targets[*]} for ${seconds}s each in $scratch"

crashed=0
summary=()
for target in "${targets[@]}"; do
    work="$scratch/$target"
    mkdir -p "$work/corpus" "$work/artifacts"
    if [[ -d "$fuzz_dir/seeds/$target" ]]; then
        cp -r "$fuzz_dir/seeds/$target/." "$work/corpus/"
    fi
    seeds="$(find "$work/corpus" -type f | wc -l)"
    echo "== $target: $seeds seeds, ${seconds}s"
    status=0
    # -jobs=1 runs the fuzzer in one child process whose output goes to fuzz-0.log in the
    # working directory: the scratch one.
    (cd "$work" && "${fuzz[@]}" run "${flags[@]}" "$target" corpus -- \
        -max_total_time="$seconds" -jobs=1 -workers=1 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/") >"$work/run.log" 2>&1 || status=$?
    log="$work/fuzz-0.log"
    [[ -f "$log" ]] || log="$work/run.log"

    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n1; }
    execs="$(stat number_of_executed_units)"
    rate="$(stat average_exec_per_sec)"
    # The last status line: "#N <event> cov: C ft: F corp: K/Sb ...".
    last="$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -n1 || true)"
    cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")"
    ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")"
    units="$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$last")"
    corpus="$(find "$work/corpus" -type f | wc -l)"
    findings="$(find "$work/artifacts" -type f \
        \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | sort)"
    verdict="no crash"
    if [[ -n "$findings" || "$status" -ne 0 ]]; then
        crashed=1
        verdict="CRASH (exit $status): ${findings:-see $log}"
        grep -E -m5 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" || true
    fi
    line="$(printf '%-12s execs %-10s exec/s %-7s cov %-6s ft %-6s corp %-11s files %s -> %s  %s' \
        "$target" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${units:-?}" "$seeds" \
        "$corpus" "$verdict")"
    echo "$line"
    summary+=("$line")
done

# cargo fuzz creates artifacts/<target>/ in the crate even with another -artifact_prefix.
find "$fuzz_dir/artifacts" -depth -type d -empty -delete 2>/dev/null || true

echo
echo "== summary (${seconds}s per target, logs in $scratch/<target>/)"
printf '%s\n' "${summary[@]}"
exit "$crashed"
