#!/usr/bin/env bash
# Peak memory of `hoist import`, `hoist save` and `hoist load` on large images: the claim to
# check is that it stays flat (a 600 MB image needs about the same RSS as a 300 MB one), because
# every path streams.
#
# Usage: bench/memory.sh            (sizes in MB: SIZES="300 600" by default)
# Env:   SIZES="300 600"            rootfs sizes to try
#        BENCH_DIR=/tmp/hoist-bench where tarballs and stores go (removed at the end unless KEEP=1)
#        CARGO_TARGET_DIR           where the release binary is built (cargo's default otherwise)
#        HOIST=path                 use this hoist binary instead of building one
#        BENCH_DOCKER_HOST=unix:///path/docker.sock
#                                   also time `docker load` of hoist's archive into that daemon
#                                   (the client's RSS, and the daemon's peak RSS if
#                                   BENCH_DOCKERD_PID is given); the loaded images are removed
#
# Each rootfs is half incompressible data (/dev/urandom) and half text, as one big file of a
# quarter of the size (so the largest single file also doubles), 1 MiB files, and many 4 KiB ones.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
SIZES=${SIZES:-"300 600"}
BENCH_DIR=${BENCH_DIR:-/tmp/hoist-bench}

if [ ! -x /usr/bin/time ]; then
    echo "installing GNU time (Debian's time package)" >&2
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
    fi
fi

if [ -z "${HOIST:-}" ]; then
    (cd "$here" && cargo build --release -q -p hoist)
    HOIST=${CARGO_TARGET_DIR:-$here/target}/release/hoist
    case $HOIST in /*) ;; *) HOIST=$here/$HOIST ;; esac
fi
[ -x "$HOIST" ] || { echo "no hoist binary at $HOIST" >&2; exit 1; }

docker=docker
[ -x /usr/bin/docker ] && docker=/usr/bin/docker # Debian's client matches Debian's daemon

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$BENCH_DIR"; }
trap cleanup EXIT

# make_rootfs SIZE_MB OUT.tar
make_rootfs() {
    local mb=$1 out=$2 dir
    dir=$(mktemp -d "$BENCH_DIR/rootfs.XXXXXX")
    local half=$((mb / 2)) quarter=$((mb / 4))
    mkdir -p "$dir/rand/small" "$dir/rand/mid" "$dir/text/small" "$dir/text/mid"
    # Incompressible: one big file, 1 MiB files, then 4 KiB files for 10% of the half.
    head -c "${quarter}M" /dev/urandom >"$dir/rand/big.bin"
    local small_n=$((half * 1024 / 10 / 4)) mid_n=$((half - quarter - half / 10))
    local i
    for ((i = 0; i < mid_n; i++)); do head -c 1M /dev/urandom >"$dir/rand/mid/$i.bin"; done
    head -c "$((small_n * 4))K" /dev/urandom | split -a 6 -b 4K - "$dir/rand/small/f"
    # Compressible: log-like text, same shape.
    text() { { yes "$(date -u) INFO request served path=/api/v1/items status=200 bytes=1234" || true; } | head -c "$1"; }
    text "${quarter}M" >"$dir/text/big.log"
    text 1M >"$dir/text/one.log"
    for ((i = 0; i < mid_n; i++)); do cp "$dir/text/one.log" "$dir/text/mid/$i.log"; done
    rm "$dir/text/one.log"
    text "$((small_n * 4))K" | split -a 6 -b 4K - "$dir/text/small/f"
    mkdir -p "$dir/bin" "$dir/etc"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/etc/passwd"
    tar -C "$dir" --numeric-owner -cf "$out" .
    rm -rf "$dir"
}

# measure LABEL SIZE_LABEL CMD... ; appends a row to the table
rows=()
measure() {
    local label=$1 size=$2
    shift 2
    local log="$BENCH_DIR/time.log"
    if ! /usr/bin/time -v -o "$log" "$@" >"$BENCH_DIR/out.log" 2>"$BENCH_DIR/err.log"; then
        echo "FAILED: $*" >&2
        cat "$BENCH_DIR/err.log" >&2
        rows+=("$(printf '%-28s %8s %10s %12s' "$label" "$size" FAILED -)")
        return 0
    fi
    local rss wall
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
    rows+=("$(printf '%-28s %8s %10s %9.1f MB' "$label" "$size" "$wall" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')")")
}

measure_stdin() { # LABEL SIZE FILE CMD...
    local label=$1 size=$2 file=$3
    shift 3
    measure "$label" "$size" sh -c '"$@" <"$0"' "$file" "$@"
}

for mb in $SIZES; do
    tarball="$BENCH_DIR/rootfs-$mb.tar"
    echo "making a ${mb} MB rootfs tarball…" >&2
    make_rootfs "$mb" "$tarball"
    size="$(($(stat -c %s "$tarball") / 1000000))MB"
    store="$BENCH_DIR/store-$mb"
    measure "hoist import FILE" "$size" "$HOIST" --root "$store" import "$tarball" "bench:$mb"
    measure_stdin "hoist import - (stdin)" "$size" "$tarball" "$HOIST" --root "$store" import - "bench:$mb-stdin"
    archive="$BENCH_DIR/saved-$mb.tar"
    measure "hoist save -o FILE" "$size" "$HOIST" --root "$store" save -o "$archive" "bench:$mb"
    measure "hoist save > FILE (stdout)" "$size" sh -c '"$0" --root "$1" save "$2" >"$3"' \
        "$HOIST" "$store" "bench:$mb" "$archive.stdout"
    rm -f "$archive.stdout"
    measure "hoist load -i FILE" "$size" "$HOIST" --root "$BENCH_DIR/load-$mb" load -i "$archive"
    measure_stdin "hoist load < FILE (stdin)" "$size" "$archive" "$HOIST" --root "$BENCH_DIR/load-stdin-$mb" load
    if [ -n "${BENCH_DOCKER_HOST:-}" ]; then
        measure "docker load -i (client)" "$size" env DOCKER_HOST="$BENCH_DOCKER_HOST" "$docker" load -i "$archive"
        if [ -n "${BENCH_DOCKERD_PID:-}" ]; then
            hwm=$(awk '/VmHWM/ {print $2}' "/proc/$BENCH_DOCKERD_PID/status")
            rows+=("$(printf '%-28s %8s %10s %9.1f MB' "dockerd peak (VmHWM so far)" "$size" - "$(awk -v k="$hwm" 'BEGIN {print k / 1024}')")")
        fi
        DOCKER_HOST="$BENCH_DOCKER_HOST" "$docker" rmi "bench:$mb" >/dev/null || true
    fi
    rm -rf "$store" "$BENCH_DIR/load-$mb" "$BENCH_DIR/load-stdin-$mb" "$archive" "$tarball"
done

echo
echo "hoist: $HOIST ($("$HOIST" --version 2>/dev/null || echo '?'))"
printf '%-28s %8s %10s %12s\n' COMMAND SIZE WALL "PEAK RSS"
printf '%s\n' "${rows[@]}"
