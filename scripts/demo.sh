#!/usr/bin/env bash
# Demo on a fresh Debian 12 / Ubuntu machine, as root: install packages, build and link tsshim, start
# a private containerd (own sockets under /tmp; a system containerd is left alone), run one container
# through tsshim, show its output, stop containerd.
#
#   bash scripts/demo.sh
#   RUNTIME=io.containerd.runc.v2 bash scripts/demo.sh   same demo through the reference Go shim
#   SKIP_INSTALL=1 bash scripts/demo.sh                  skip apt, npm ci, build and link
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
RUNTIME=${RUNTIME:-io.containerd.tsshim.v2}
NAMESPACE=tsshim-demo
export DEBIAN_FRONTEND=noninteractive

log() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (containerd and runc need it)" >&2
  exit 1
fi

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  log "installing containerd, runc, busybox-static (apt may not start services: policy-rc.d)"
  added_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends containerd runc busybox-static \
    build-essential python3 ca-certificates
  if [ "$added_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi

  if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    echo "demo.sh: Node.js >= 20 is required (see README); .ci/run can install it" >&2
    exit 1
  fi
  log "npm ci && npm run build && npm link"
  npm ci --no-audit --no-fund
  npm run build
  npm link
fi

if [ "$RUNTIME" = io.containerd.tsshim.v2 ] && [ ! -f "$REPO/dist/src/daemon/main.js" ]; then
  echo "demo.sh: dist/src/daemon/main.js is missing: run npm run build (or drop SKIP_INSTALL)" >&2
  exit 1
fi

DIR=$(mktemp -d /tmp/tsshim-demo-XXXXXX)
SOCK=$DIR/c.sock
CONTAINERD_PID=
ID=demo-$$

cleanup() {
  set +e
  if [ -n "$CONTAINERD_PID" ]; then
    ctr --address "$SOCK" -n "$NAMESPACE" task kill -s SIGKILL "$ID" >/dev/null 2>&1
    ctr --address "$SOCK" -n "$NAMESPACE" task delete "$ID" >/dev/null 2>&1
    ctr --address "$SOCK" -n "$NAMESPACE" container delete "$ID" >/dev/null 2>&1
    kill -TERM "$CONTAINERD_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$CONTAINERD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$CONTAINERD_PID" 2>/dev/null
    wait "$CONTAINERD_PID" 2>/dev/null
    echo "containerd (pid $CONTAINERD_PID) stopped"
  fi
  # Unmount anything the run left under the demo dir, then remove it.
  awk -v d="$DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT

log "building a busybox rootfs in $DIR/rootfs"
ROOTFS=$DIR/rootfs
mkdir -p "$ROOTFS"/{bin,etc,proc,sys,dev,tmp,root}
BUSYBOX=$(command -v busybox)
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
for applet in $("$ROOTFS/bin/busybox" --list); do
  [ -e "$ROOTFS/bin/$applet" ] || ln -s busybox "$ROOTFS/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$ROOTFS/etc/passwd"
chmod 1777 "$ROOTFS/tmp"

log "starting a private containerd on $SOCK"
cat > "$DIR/config.toml" <<EOF
version = 2
root = "$DIR/root"
state = "$DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/opt"
EOF
# $REPO/bin first on PATH: containerd finds containerd-shim-tsshim-v2 there even without npm link.
PATH="$REPO/bin:$PATH" containerd --config "$DIR/config.toml" > "$DIR/containerd.log" 2>&1 &
CONTAINERD_PID=$!
for _ in $(seq 100); do
  ctr --address "$SOCK" version >/dev/null 2>&1 && break
  kill -0 "$CONTAINERD_PID" 2>/dev/null || { echo "containerd exited:"; tail -20 "$DIR/containerd.log"; exit 1; }
  sleep 0.1
done
ctr --address "$SOCK" version

log "ctr run --rm --runtime $RUNTIME --rootfs $ROOTFS $ID echo hello from tsshim"
set +e
OUTPUT=$(timeout 60 ctr --address "$SOCK" -n "$NAMESPACE" run --rm --runtime "$RUNTIME" \
  --rootfs "$ROOTFS" "$ID" /bin/echo hello from tsshim 2>&1)
STATUS=$?
set -e
echo "container output: $OUTPUT"
if [ "$STATUS" -ne 0 ] || [ "$OUTPUT" != "hello from tsshim" ]; then
  echo "demo.sh: the container run failed (exit $STATUS); containerd log tail:" >&2
  tail -30 "$DIR/containerd.log" >&2
  exit 1
fi
log "demo OK with runtime $RUNTIME"
