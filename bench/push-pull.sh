#!/usr/bin/env bash
# Push and pull of the `large` benchmark context as a one-layer image (200 MB random + 139 MB
# text), hoist against docker in the same run, to a docker-registry on loopback:
#   bench/push-pull.sh [WORKDIR]
# Prints wall times: first push (compression included), re-push (must upload nothing), pull into
# an empty store. Needs docker-registry, docker.io and a release build (it builds one).
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d /tmp/hoist-bench-push.XXXXXX)}"
mkdir -p "$work"
cargo build --release -q -p hoist
hoist="$PWD/target/release/hoist"
[ -n "${CARGO_TARGET_DIR:-}" ] && hoist="$CARGO_TARGET_DIR/release/hoist"

[ -d "$work/ctx/large" ] || python3 ../shared/bench/make-contexts "$work/ctx" >/dev/null 2>&1 \
  || python3 /work/shared/bench/make-contexts "$work/ctx"
[ -f "$work/large.tar" ] || tar -C "$work/ctx/large" -cf "$work/large.tar" .

rm -rf "$work/registry" "$work/docker" "$work/docker-exec"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg=$!
dockerd --iptables=false --ip6tables=false --bridge=none --data-root "$work/docker" \
  --exec-root "$work/docker-exec" --pidfile "$work/docker.pid" -H "unix://$work/docker.sock" \
  >"$work/dockerd.log" 2>&1 &
dpid=$!
trap 'kill $reg $dpid 2>/dev/null; wait $dpid 2>/dev/null || true' EXIT
export DOCKER_HOST="unix://$work/docker.sock"
for _ in $(seq 100); do docker version >/dev/null 2>&1 && break; sleep 0.2; done

host="127.0.0.1:$port"
t() { local s; s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }

rm -rf "$work/h1" "$work/h2"
HOIST_ROOT="$work/h1" "$hoist" import "$work/large.tar" "$host/hoist/large:1" >/dev/null
docker import "$work/large.tar" "$host/docker/large:1" >/dev/null

echo "push, first   hoist $(HOIST_ROOT="$work/h1" t "$hoist" push "$host/hoist/large:1") s   docker $(t docker push "$host/docker/large:1") s"
echo "push, again   hoist $(HOIST_ROOT="$work/h1" t "$hoist" push "$host/hoist/large:1") s   docker $(t docker push "$host/docker/large:1") s"
docker rmi -f "$host/docker/large:1" >/dev/null
echo "pull, empty   hoist $(HOIST_ROOT="$work/h2" t "$hoist" pull "$host/hoist/large:1") s   docker $(t docker pull "$host/docker/large:1") s"

# Buildah (Debian's), from the same image: what hoist's push must beat by 2×.
if command -v buildah >/dev/null; then
  b=(buildah --root "$work/buildah" --runroot "$work/buildah-run" --storage-driver vfs)
  rm -rf "$work/buildah" "$work/buildah-run"
  HOIST_ROOT="$work/h1" "$hoist" save -o "$work/large-image.tar" "$host/hoist/large:1"
  "${b[@]}" pull -q "docker-archive:$work/large-image.tar" >/dev/null
  "${b[@]}" tag "$host/hoist/large:1" "$host/buildah/large:1"
  echo "push, first   buildah $(t "${b[@]}" push --tls-verify=false "$host/buildah/large:1") s"
  echo "push, again   buildah $(t "${b[@]}" push --tls-verify=false "$host/buildah/large:1") s"
  # A fresh hoist store pushing to a fresh repository: compression included again.
  rm -rf "$work/h3"
  HOIST_ROOT="$work/h3" "$hoist" load -q -i "$work/large-image.tar"
  HOIST_ROOT="$work/h3" "$hoist" tag "$host/hoist/large:1" "$host/hoist2/large:1"
  echo "push, fresh   hoist $(HOIST_ROOT="$work/h3" t "$hoist" push "$host/hoist2/large:1") s"
  rm -rf "$work/buildah" "$work/buildah-run"
fi
