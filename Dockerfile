# fedra's container image: one image, two roles (server and client), CPU-only PyTorch.
#
#   docker build -t fedra .                                   # where Docker and a registry are reachable
#   podman build --network none --format docker \
#       --build-arg BASE=localhost/fedra-base -t fedra .       # offline, from wheels/ (see below)
#
#   docker run fedra server /job/job.toml --certs /certs ...
#   docker run fedra client --server HOST:7788 --job /job/job.toml --name site-01 --certs /certs ...
#
# Wheels. If ./wheels/ holds wheels (`pip wheel '.[torch]' setuptools wheel -c constraints.txt -w wheels`
# on a host with the same Python minor version; fedra itself is always built from src/), the build
# installs from there with --no-index and needs no network at all: that is how the tests build it with
# podman, where no index is reachable. If ./wheels/
# is absent or empty, the build downloads from PyPI with the exact pins of constraints.txt, and torch from
# PyTorch's CPU index (TORCH_INDEX): an unpinned torch from PyPI would be a multi-GB CUDA build.
#
# BASE must provide python3 (>= 3.11) with venv; the default is the official slim image. The tests use a
# Debian 12 root filesystem imported into podman (scripts/debian-rootfs), since no registry is reachable.
ARG BASE=docker.io/library/python:3.11-slim-bookworm

# ---- build: a virtual environment in /opt/fedra, from wheels only (no compiler needed or installed) ----
FROM ${BASE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
# `wheel[s]` is a pattern, so a missing wheels/ directory is no error; constraints.txt always matches.
COPY constraints.txt wheel[s] /wheels/
COPY pyproject.toml README.md /src/
# Dependencies first, in their own layer: it is rebuilt only when the wheels, the pins or pyproject.toml
# change, not on every change to fedra's source. The list comes from pyproject.toml (tomllib: no tools).
RUN set -eu; \
    python3 -m venv /opt/fedra; \
    python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['torch']))" > /tmp/requirements.txt; \
    if ls /wheels/*.whl >/dev/null 2>&1; then \
        echo "installing from the wheels in the build context (no network)"; \
        set -- --no-index --find-links /wheels; \
    else \
        echo "no wheels in the build context: downloading the pinned versions"; \
        set -- --extra-index-url "$TORCH_INDEX"; \
    fi; \
    /opt/fedra/bin/pip install "$@" -c /wheels/constraints.txt -r /tmp/requirements.txt; \
    printf '%s\n' "$@" > /tmp/pip-args
COPY src /src/src
# fedra itself; its build backend (setuptools, from the wheels or the index) lives only in this stage.
# pip compiles every module's bytecode as it installs, and the image keeps it: at run time the root
# filesystem is read-only (Kubernetes), so a process could not cache bytecode, and every start would
# compile torch's Python again (minutes on a busy node).
RUN set -eu; \
    mapfile -t args < /tmp/pip-args; \
    /opt/fedra/bin/pip install "${args[@]}" -c /wheels/constraints.txt --no-deps /src; \
    /opt/fedra/bin/pip uninstall -y pip setuptools wheel >/dev/null 2>&1 || true; \
    /opt/fedra/bin/fedra version

# ---- runtime: the base, the venv, an unprivileged user; nothing else ----
FROM ${BASE} AS runtime
LABEL org.opencontainers.image.title="fedra" \
      org.opencontainers.image.description="fedra federated learning: server and client" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it and volumes can be chowned ahead.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/fedra --shell /usr/sbin/nologin fedra \
    && install -d -o fedra -g fedra -m 0750 /var/lib/fedra
COPY --from=build /opt/fedra /opt/fedra
COPY deploy/container/entrypoint.sh /usr/local/bin/fedra-entrypoint
# Bytecode is not written: the root filesystem is read-only under Kubernetes (readOnlyRootFilesystem).
ENV PATH=/opt/fedra/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/var/lib/fedra FEDRA_PORT=7788 FEDRA_SANDBOX=off
USER 10001:10001
WORKDIR /var/lib/fedra
EXPOSE 7788
VOLUME ["/var/lib/fedra"]
# The server is healthy when its gRPC port accepts a TCP connection; a client while its process lives.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["fedra-entrypoint", "health"]
ENTRYPOINT ["fedra-entrypoint"]
CMD ["--help"]
