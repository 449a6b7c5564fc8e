#!/usr/bin/env bash
# Builds the Dockerfile without a Docker daemon or a registry, then runs `make quick` in the image with its
# volumes bind-mounted (docs/container.md records a run). Needs root and Debian's archive (debootstrap, buildah).
#
#   sudo benchmarks/verify_container.sh [all|base|build|check|quick]     (default: all)
#
# - base:  python:3.11-slim-bookworm cannot be pulled here, so a stand-in under that name is made from a
#          debootstrapped bookworm with Debian's python3 (3.11.2, not the image's own 3.11 build in /usr/local).
# - build: `buildah bud` of the Dockerfile (its own parser, every instruction, RUN steps in a chroot) on a clean
#          clone of the repository at REV.
# - check: the user, torch and its CUDA, the commit the runs will record, the default command.
# - quick: `make quick` in the image, the data, MLflow store and cache on folders mounted at the volumes' paths.
# Everything lives under WORK (default /var/tmp/fmnist-container, about 15 GB), never in the working tree.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/var/tmp/fmnist-container}
REV=${REV:-HEAD}
BASE=docker.io/library/python:3.11-slim-bookworm   # the Dockerfile's FROM, as buildah names it
IMAGE=localhost/fmnist:verify
MIRROR=http://deb.debian.org/debian
STORE=(--root "$WORK/storage" --runroot "$WORK/run" --storage-driver overlay)

step() { echo "== $(date -u +%FT%TZ) $* (load average $(cut -d' ' -f1-3 /proc/loadavg))"; }

need_tools() {
    [ "$(id -u)" = 0 ] || { echo "verify_container.sh needs root (debootstrap, buildah's storage); run it with sudo"; exit 2; }
    command -v debootstrap >/dev/null && command -v buildah >/dev/null ||
        apt-get install -y -q debootstrap buildah
}

# A sandbox with a TLS-intercepting proxy: its CA (if this host has one in /usr/local/share/ca-certificates) and
# a pip.conf naming the system bundle go into the stand-in base only, so pip in the build can reach PyPI.
# Nothing of the kind is in the Dockerfile: a real build needs neither.
trust_host_ca() {
    local rootfs=$1
    compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null || return 0
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$rootfs/etc/pip.conf"
}

base() {
    local rootfs=$WORK/rootfs
    if [ ! -x "$rootfs/usr/bin/python3" ]; then
        step "debootstrap bookworm into $rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,netbase,tzdata \
            bookworm "$rootfs" "$MIRROR"
    fi
    # The official image's sources: bookworm, its updates and security fixes.
    rm -f "$rootfs/etc/apt/sources.list"
    cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    trust_host_ca "$rootfs"
    chroot "$rootfs" apt-get clean
    step "stand-in base image $BASE"
    tar -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf "$WORK/rootfs.tar" .
    local ctr
    ctr=$(buildah "${STORE[@]}" from scratch)
    buildah "${STORE[@]}" add "$ctr" "$WORK/rootfs.tar" /
    buildah "${STORE[@]}" config --env LANG=C.UTF-8 --cmd python3 "$ctr"
    buildah "${STORE[@]}" commit --rm -q "$ctr" "$BASE"
    rm -f "$WORK/rootfs.tar"
}

build() {
    step "clean clone of $REPO at $REV"
    rm -rf "$WORK/context"
    git clone -q "$REPO" "$WORK/context"
    git -C "$WORK/context" checkout -q "$(git -C "$REPO" rev-parse "$REV")"
    step "buildah bud (the Dockerfile at $(git -C "$WORK/context" rev-parse --short HEAD))"
    time buildah "${STORE[@]}" bud --layers --isolation chroot --pull=never -t "$IMAGE" "$WORK/context"
    buildah "${STORE[@]}" images
}

# run_in [buildah run options] -- command...: in a fresh container of the image, removed afterwards.
run_in() {
    local ctr status=0 opts=()
    while [ "$1" != -- ]; do opts+=("$1"); shift; done; shift
    ctr=$(buildah "${STORE[@]}" from -q --pull=never "$IMAGE")
    buildah "${STORE[@]}" run --isolation chroot "${opts[@]}" "$ctr" -- "$@" || status=$?
    buildah "${STORE[@]}" rm "$ctr" >/dev/null
    return $status
}

check() {
    step "the image's configuration (user, workdir, env, default command)"
    buildah "${STORE[@]}" inspect --type image --format \
        '{{.OCIv1.Config.User}} {{.OCIv1.Config.WorkingDir}} {{.OCIv1.Config.Cmd}}{{range .OCIv1.Config.Env}}
  {{.}}{{end}}
' "$IMAGE"
    step "inside: user, Python, torch and its CUDA, the commit runs will record"
    run_in -- bash -c 'id; python --version; python -c "import sys, torch; print(sys.executable, torch.__version__, \
\"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version(), \"available\", torch.cuda.is_available())"
        echo "commit $(git rev-parse HEAD) dirty: [$(git status --porcelain --untracked-files=no)]"
        du -sh .venv .venv/lib/python3.11/site-packages/nvidia; dvc cache dir; dvc version | head -3'
}

quick() {
    local vol=$WORK/volumes
    rm -rf "$vol" && mkdir -p "$vol/data" "$vol/mlflow" "$vol/cache"
    chown -R 1000:1000 "$vol"
    step "make quick in the image, volumes in $vol"
    (while sleep 60; do echo "load $(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)"; done) &
    local sampler=$!
    local status=0
    time run_in -v "$vol/data:/work/fmnist/data" -v "$vol/mlflow:/work/mlflow" -v "$vol/cache:/work/cache" \
        -- make quick || status=$?
    kill "$sampler"
    step "make quick exited $status; what the volumes hold"
    du -sh "$vol"/*/ "$vol"/mlflow/*
    ls "$vol/data" "$vol/mlflow/mlartifacts" "$vol/cache/dvc/files/md5" | head -20
    python3 - "$vol/mlflow/mlflow.db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("select e.name, r.status, count(*) from runs r join experiments e using (experiment_id) "
                  "group by 1, 2").fetchall()
print("MLflow runs (experiment, status, count):", rows)
EOF
    return $status
}

need_tools
mkdir -p "$WORK"
case ${1:-all} in
    base) base ;; build) build ;; check) check ;; quick) quick ;;
    all) base; build; check; quick ;;
    *) echo "verify_container.sh: unknown step '$1'; use all, base, build, check or quick"; exit 2 ;;
esac
