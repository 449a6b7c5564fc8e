#!/usr/bin/env bash
# Builds the Dockerfile without a Docker daemon or a registry, then runs `make quick` in the image with its
# volumes bind-mounted (docs/container.md records a run). Needs root and Debian's archive (debootstrap, buildah).
#
#   sudo benchmarks/verify_container.sh [all|base|build|check|quick|ui]     (default: all)
#   sudo TINY=1 KEEP_VOLUMES=1 benchmarks/verify_container.sh quick        (three recipes; the last run's volumes)
#
# - base:  python:3.11-slim-bookworm cannot be pulled here, so a stand-in under that name is made from a
#          debootstrapped bookworm with Debian's python3 (3.11.2, not the image's own 3.11 build in /usr/local).
# - build: `buildah bud` of the Dockerfile (its own parser, every instruction, RUN steps in a chroot) on a clean
#          clone of the repository at REV.
# - check: the user, torch and its CUDA, the commit the runs will record, the default command, torch.compile.
# - quick: `make quick` in the image, the data, MLflow store and cache on folders mounted at the volumes' paths.
# - ui:    `mlflow ui` in another container on the MLflow folder alone; the runs and the report read through it.
# Everything lives under WORK (default /var/tmp/fmnist-container: 7.4 GB after a build, more during one), never
# in the working tree.
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

# Behind a TLS-intercepting proxy: its CA (if this host has one in /usr/local/share/ca-certificates) and
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
    # The official image has Python's headers (/usr/local/include/python3.11), which torch.compile's C++ needs.
    chroot "$rootfs" bash -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends libpython3.11-dev \
        >/dev/null && apt-get clean'
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
        du -sh .venv; dvc cache dir; dvc version | head -3
        python -c "import torch; f = torch.compile(lambda x: (x.sin() + 1).relu()); print(\"torch.compile on the CPU:\", \
f(torch.zeros(8)).sum().item())"'
}

# TINY=1: three recipes on the end-to-end tests' budgets (tests/e2e_support.py) instead of all 22, for a machine
# too busy for the whole quick profile; every stage still runs. KEEP_VOLUMES=1: the last run's volumes stay, so
# DVC's run cache on the cache volume can restore the data stages.
TINY_PARAMS='import yaml
params = yaml.safe_load(open("params.yaml"))
params["train_recipes"] = ["mlp", "cnn4", "sk_logreg"]
budgets = {"mlp": {"epochs": 2, "train_subset": 3000}, "cnn4": {"epochs": 1, "train_subset": 500, "eval_subset": 400},
           "sk_logreg": {"train_subset": 1000, "model": {"max_iter": 30}}}
for name, budget in budgets.items():
    params["recipes"][name]["budgets"]["quick"] = budget
yaml.safe_dump(params, open("params.yaml", "w"), sort_keys=False)'

quick() {
    local vol=$WORK/volumes command="make quick"
    [ "${KEEP_VOLUMES:-0}" = 1 ] || rm -rf "$vol"
    mkdir -p "$vol/data" "$vol/mlflow" "$vol/cache"
    chown -R 1000:1000 "$vol"
    [ "${TINY:-0}" = 1 ] && command="python -c '$TINY_PARAMS' && make quick"
    step "${TINY:+TINY=$TINY }make quick in the image, volumes in $vol"
    (while sleep 60; do echo "load $(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)"; done) &
    local sampler=$! status=0
    time run_in -v "$vol/data:/srv/fmnist/data" -v "$vol/mlflow:/srv/mlflow" -v "$vol/cache:/srv/cache" \
        -- bash -c "$command" || status=$?
    kill "$sampler"
    step "make quick exited $status; what the volumes hold"
    du -sh "$vol"/*/ || true
    find "$vol" -maxdepth 3 -not -path "*/dvc/files/*" | sort
    python3 - "$vol/mlflow/mlflow.db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("select e.name, r.name, r.status from runs r join experiments e using (experiment_id) "
                  "order by r.start_time").fetchall()
print("MLflow runs (experiment, run, status):", *rows, sep="\n  ")
print("registered models:", db.execute("select name, version from model_versions").fetchall())
EOF
    return $status
}

# The MLflow UI in a second container, on the MLflow volume alone: the runs, and the report the last make quick
# logged, read back through the UI's own endpoints (as `docker run -p 5000:5000 ... mlflow ui --host 0.0.0.0`).
UI_PROBE='import json, sys, time, urllib.request
base = "http://127.0.0.1:" + sys.argv[1]
def get(path, data=None):
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(request, timeout=10).read()
for _ in range(120):
    try:
        get("/health"); break
    except OSError:
        time.sleep(1)
experiments = json.loads(get("/ajax-api/2.0/mlflow/experiments/search?max_results=50"))["experiments"]
print("experiments:", [e["name"] for e in experiments])
quick = next(e for e in experiments if e["name"] == "fmnist-quick")
query = {"experiment_ids": [quick["experiment_id"]], "filter": "tags.mlflow.runName = \"report\"", "max_results": 1}
run = json.loads(get("/ajax-api/2.0/mlflow/runs/search", json.dumps(query).encode()))["runs"][0]
html = get("/get-artifact?path=report/report.html&run_uuid=" + run["info"]["run_id"])
print("report run", run["info"]["run_id"], "report.html", len(html), "bytes, starts", html[:15])'

ui() {
    local port=${UI_PORT:-5391}
    step "mlflow ui in the image on the MLflow volume, port $port"
    run_in -v "$WORK/volumes/mlflow:/srv/mlflow" -- bash -c "mlflow ui --backend-store-uri \"\$MLFLOW_TRACKING_URI\" \
        --host 127.0.0.1 --port $port >/tmp/ui.log 2>&1 & server=\$!; python -c '$UI_PROBE' $port; status=\$?
        kill \$server; exit \$status"
}

need_tools
mkdir -p "$WORK"
case ${1:-all} in
    base) base ;; build) build ;; check) check ;; quick) quick ;; ui) ui ;;
    all) base; build; check; quick; ui ;;
    *) echo "verify_container.sh: unknown step '$1'; use all, base, build, check, quick or ui"; exit 2 ;;
esac
