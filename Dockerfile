# syntax=docker/dockerfile:1
#
# One image, two entry points:
#   geoserver ...                        the Tile38-compatible server (data under /data)
#   geocluster run --all-namespaces      the kopf operator (default CMD)
#
# Build:  docker build -t geocluster:dev .
# Runs as uid/gid 65532 and works with a read-only root filesystem: the only
# writable path it needs is the /data volume (geoserver's AOF); the operator
# writes nothing at all. Mount an emptyDir on /tmp if a library wants scratch space.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
# builder: build wheels for the project and all its dependencies, then install
# them into a self-contained venv at /opt/geocluster.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# The sources are needed to build the project's own wheel, so any source edit rebuilds this
# layer (dependency wheels included). README.md* tolerates a missing README.
# All runtime dependencies ship manylinux wheels for amd64 and arm64; the project's own wheel
# compiles geoserver._core (setup.py, src/core), so the builder alone gets g++ (it cannot leak
# into the final stage, which links the core against the base image's libstdc++).
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md* ./
COPY src ./src
COPY server ./server
COPY operator ./operator

# The last check fails the build if the wheel came out without the compiled core.
RUN python -m pip wheel --wheel-dir /wheels . \
 && python -m venv /opt/geocluster \
 && /opt/geocluster/bin/pip install --no-index --find-links /wheels geocluster \
 && /opt/geocluster/bin/geoserver --help >/dev/null \
 && /opt/geocluster/bin/geocluster --help >/dev/null \
 && /opt/geocluster/bin/python -c "from geoserver import fastpath; assert fastpath.ENABLED"

# ---------------------------------------------------------------------------
# final: the slim base plus the installed venv, nothing else.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="geocluster" \
      org.opencontainers.image.description="Tile38-compatible geoserver and the GeoCluster Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/geocluster/geocluster"

ENV PATH=/opt/geocluster/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/data

RUN groupadd --system --gid 65532 geocluster \
 && useradd --system --uid 65532 --gid 65532 --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin geocluster \
 && mkdir -p /data \
 && chown 65532:65532 /data

# The venv's python symlinks to /usr/local/bin/python3.11 of the same base
# image; .pyc files were compiled at install time in the builder.
COPY --from=builder /opt/geocluster /opt/geocluster

USER 65532:65532
WORKDIR /data
VOLUME ["/data"]

# 9851: geoserver RESP/HTTP, 9852: geoserver metrics;
# 8080: operator liveness (kopf /healthz, with --liveness=0.0.0.0:8080), 9090: operator metrics.
EXPOSE 9851 9852 8080 9090

CMD ["geocluster", "run", "--all-namespaces"]
