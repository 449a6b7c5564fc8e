# fmnist on a GPU server: the pinned tree, CUDA from the torch wheels, `make run` by default (docs/container.md).
#   docker build -t fmnist .
#   docker run --gpus all -v fmnist-data:/srv/fmnist/data -v fmnist-mlflow:/srv/mlflow -v fmnist-cache:/srv/cache fmnist
FROM python:3.11-slim-bookworm

# The NVIDIA container toolkit mounts the host's driver (libcuda, NVML) into the container; CUDA's runtime
# libraries are the nvidia-* wheels requirements.lock pins beside torch (2.14.1+cu130: an r580 driver or newer).
# The MLflow store (mlflow.db, artifacts beside it in mlartifacts/) and the caches live on volumes.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SYSTEM_NEED=dataset-fashion-mnist \
    MLFLOW_TRACKING_URI=sqlite:////srv/mlflow/mlflow.db \
    TORCH_HOME=/srv/cache/torch \
    PATH=/srv/fmnist/.venv/bin:$PATH

# make runs every command, git names each run's commit, Debian's dataset-fashion-mnist is the offline source of the
# four official files, g++ builds the kernels of torch.compile (a recipe's `compile: true`: inductor's C++, Triton's
# launchers). Chromium and PostgreSQL (the tests, the team server) stay out: SYSTEM_NEED above is all that
# `make setup` asks of the system here.
# Not pinned (DL3008): bookworm is a stable release that changes a package only for a security fix, and that
# fix removes the pinned version from the mirror, which would break every build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends make git g++ dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

# The volumes' mount points exist and belong to the user, so named volumes start out writable by it.
RUN useradd --create-home --uid 1000 --shell /bin/bash fmnist \
 && mkdir -p /srv/fmnist/data /srv/mlflow /srv/cache/dvc /srv/cache/torch \
 && chown -R fmnist:fmnist /srv
# Numeric, so a runtime that only admits non-root users (runAsNonRoot) can check it.
USER 1000:1000
WORKDIR /srv/fmnist

# The pinned dependencies alone first: this layer (about 3 GB of torch and CUDA) is rebuilt only when the lock changes.
COPY --chown=fmnist:fmnist requirements.lock ./
RUN python3 -m venv .venv && .venv/bin/pip install -q -r requirements.lock

# The working tree with its .git (runs record the commit; DVC needs the repository); .dockerignore leaves out the
# virtualenv and every local output. `make venv` is the project's own install (the lock is satisfied: it adds
# fmnist itself); DVC's cache goes to the cache volume.
COPY --chown=fmnist:fmnist . .
RUN make venv && dvc cache dir --local /srv/cache/dvc

CMD ["make", "run"]
