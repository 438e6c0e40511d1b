#!/usr/bin/env bash
# The build benchmarks of shared/bench/README.md, hoist against docker's BuildKit in the same run:
#   large cold (--no-cache), large warm (nothing changed), large after appending to one file,
#   runcp cold, parallel cold, and hoist's peak RSS on large and on a doubled large context
#   (cold, and rebuilt after appending to one file).
#
# Usage: bench/build.sh
# Env:   BENCH_DIR=/tmp/hoist-build-bench   contexts, stores, docker data (removed unless KEEP=1)
#        HOIST=path                         a hoist binary (default: cargo build --release)
#        MAKE_CONTEXTS=path                 shared/bench/make-contexts (default: ../shared/bench/)
#        NO_DOCKER=1                        hoist only
# Prints one table: benchmark, docker seconds, hoist seconds, ratio.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/hoist-build-bench}
MAKE_CONTEXTS=${MAKE_CONTEXTS:-$here/../shared/bench/make-contexts}
mkdir -p "$BENCH_DIR"
# A nearly full disk slows every builder's writes: say how full it is.
echo "bench: $(df -h --output=pcent "$BENCH_DIR" | tail -1 | tr -d ' ') of the disk used" >&2
# So does little free memory: every page written then waits for one to be reclaimed.
echo "bench: $(awk '/^MemFree:/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo) of memory free" >&2

for pkg in time busybox-static; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
    fi
done

if [ -z "${HOIST:-}" ]; then
    (cd "$here" && cargo build --release -q -p hoist)
    HOIST=${CARGO_TARGET_DIR:-$here/target}/release/hoist
fi
export HOIST_ROOT=$BENCH_DIR/store
rm -rf "$HOIST_ROOT"

ctx=$BENCH_DIR/contexts
if [ ! -d "$ctx/large" ]; then
    python3 "$MAKE_CONTEXTS" "$ctx" >/dev/null
fi

# The base image, the same bytes for both builders: a busybox rootfs loaded from one archive.
base=$BENCH_DIR/base
rm -rf "$base" && mkdir -p "$base/rootfs/bin" "$base/rootfs/etc" "$base/rootfs/tmp"
cp /bin/busybox "$base/rootfs/bin/"
for a in sh ls cat echo find wc cp rm sleep dd mkdir; do ln -s busybox "$base/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$base/rootfs/etc/passwd"
tar -C "$base/rootfs" -cf "$base/rootfs.tar" .
"$HOIST" import -c 'CMD ["sh"]' "$base/rootfs.tar" bench-base:1 >/dev/null
"$HOIST" save -o "$base/base.tar" bench-base:1

dockerd_pid=""
cleanup() {
    if [ -n "$dockerd_pid" ]; then kill "$dockerd_pid" 2>/dev/null || true; wait "$dockerd_pid" 2>/dev/null || true; fi
    [ "${KEEP:-}" = 1 ] || rm -rf "$BENCH_DIR/store" "$BENCH_DIR/docker"
}
trap cleanup EXIT
if [ -z "${NO_DOCKER:-}" ]; then
    d=$BENCH_DIR/docker
    rm -rf "$d" && mkdir -p "$d"
    dockerd --iptables=false --ip6tables=false --bridge=none --data-root "$d/data" --exec-root "$d/exec" \
        --pidfile "$d/pid" -H "unix://$d/sock" >"$d/log" 2>&1 &
    dockerd_pid=$!
    export DOCKER_HOST=unix://$d/sock DOCKER_BUILDKIT=1
    for _ in $(seq 100); do /usr/bin/docker version >/dev/null 2>&1 && break; sleep 0.2; done
    /usr/bin/docker load -i "$base/base.tar" >/dev/null
fi

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
results=()
settle() { # context directory
    sync
    tar -C "$1" -cf - . | cat >/dev/null
}
run_pair() { # name, docker args…, --, hoist args…
    local name=$1; shift
    local dargs=() hargs=()
    while [ "$1" != "--" ]; do dargs+=("$1"); shift; done; shift
    hargs=("$@")
    local dt="-" ht r="-"
    # Each builder starts with nothing left to write back from the one before (outside the
    # timing): neither pays for the other's dirty pages. And with its context read into the
    # page cache: a context idle for a minute may have been paged out (some VMs reclaim idle
    # page cache, as this machine's DAMON does), and the first builder would read it from the
    # disk for the second.
    if [ -z "${NO_DOCKER:-}" ]; then
        settle "${dargs[-1]}"
        local t0; t0=$(now); /usr/bin/docker build --network host -q "${dargs[@]}" >/dev/null; dt=$(secs "$t0" "$(now)")
    fi
    settle "${hargs[-1]}"
    local t0; t0=$(now); "$HOIST" build -q "${hargs[@]}" >/dev/null; ht=$(secs "$t0" "$(now)")
    [ "$dt" != "-" ] && r=$(python3 -c "print(f'{$dt / max($ht, 0.001):.1f}x')")
    results+=("$(printf '%-34s %10s %10s %8s' "$name" "$dt" "$ht" "$r")")
}

run_pair "large: cold (--no-cache)" --no-cache -t l "$ctx/large" -- --no-cache -t l "$ctx/large"
run_pair "large: warm, nothing changed" -t l "$ctx/large" -- -t l "$ctx/large"
echo " appended" >> "$ctx/large/src/d100/f050.txt"
run_pair "large: one file appended" -t l "$ctx/large" -- -t l "$ctx/large"
# A fast rebuild must still be right: the image holds the appended file.
want=$(md5sum < "$ctx/large/src/d100/f050.txt" | cut -d' ' -f1)
got=$("$HOIST" run --rm l /bin/busybox md5sum /app/src/d100/f050.txt | cut -d' ' -f1)
if [ "$want" != "$got" ]; then
    echo "hoist's rebuilt image does not hold the appended file ($got, want $want)" >&2
    exit 1
fi
run_pair "runcp: cold (--no-cache)" --no-cache -t r "$ctx/runcp" -- --no-cache -t r "$ctx/runcp"
run_pair "parallel: cold (--no-cache)" --no-cache -t p "$ctx/parallel" -- --no-cache -t p "$ctx/parallel"

# Peak memory of the building process, on large and on large with its text tree doubled.
rss() { /usr/bin/time -f %M "$HOIST" build -q --no-cache "$1" 2>&1 >/dev/null | tail -1; }
rss_large=$(rss "$ctx/large")
big=$BENCH_DIR/large-doubled
if [ ! -d "$big" ]; then
    cp -a "$ctx/large" "$big"
    cp -a "$ctx/large/src" "$big/src2"
fi
rss_big=$(rss "$big")
# And of a rebuild after appending to one file, which reuses the earlier layer (both contexts
# were just built, so each rebuild starts from its own).
rss_one() {
    echo " appended" >> "$1/src/d100/f050.txt"
    /usr/bin/time -f %M "$HOIST" build -q "$1" 2>&1 >/dev/null | tail -1
}
rss_one_large=$(rss_one "$ctx/large")
rss_one_big=$(rss_one "$big")

printf '%-34s %10s %10s %8s\n' "benchmark" "docker s" "hoist s" "ratio"
printf '%s\n' "${results[@]}"
printf '%-34s %10s\n' "hoist peak RSS, large" "$((rss_large / 1024)) MB"
printf '%-34s %10s\n' "hoist peak RSS, large doubled" "$((rss_big / 1024)) MB"
printf '%-34s %10s\n' "hoist peak RSS, large, one file" "$((rss_one_large / 1024)) MB"
printf '%-34s %10s\n' "hoist peak RSS, doubled, one file" "$((rss_one_big / 1024)) MB"
