# syntax=docker/dockerfile:1
# rpt-connector image: `docker build -t rpt-connector .`
# Stage `native` builds rpt_native (native/, the Rust hot path) into a wheel, stage `build` the
# connector's wheel; the runtime stage installs both against the lock (constraints.txt), so the
# image runs exactly the dependency versions the test suite ran, on the native path. The Rust
# toolchain stays in the `native` stage: the image has none.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS native
# A Debian mirror for a base image without apt sources (`make image-test` makes one with
# debootstrap); python:*-slim-bookworm has its own. It never reaches the runtime stage.
ARG APT_MIRROR=""
# Debian's rustc-web/cargo-web (1.85 in bookworm): pyo3 0.23 needs 1.63, Cargo.lock v4 1.78.
RUN if [ -n "$APT_MIRROR" ]; then echo "deb $APT_MIRROR bookworm main" > /etc/apt/sources.list.d/build.list; fi \
    && apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends rustc-web cargo-web > /dev/null \
    && rm -rf /var/lib/apt/lists/* /etc/apt/sources.list.d/build.list
WORKDIR /src/native
# maturin as native/pyproject.toml asks, then the crates Cargo.lock names, each in a layer that
# changes only with those files: a change to native/src recompiles, it does not download.
COPY native/pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires']))" > build-requires.txt \
    && python -m pip install --no-cache-dir -r build-requires.txt
COPY native/Cargo.toml native/Cargo.lock ./
RUN mkdir src && touch src/lib.rs && cargo fetch --locked && rm -r src
COPY native/src/ src/
RUN CARGO_NET_OFFLINE=true python -m pip wheel --no-cache-dir --no-deps --no-build-isolation \
    --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir --upgrade pip
# The runtime dependencies as a requirements file, so the runtime stage installs them in a
# layer that changes only with pyproject.toml or constraints.txt: a change to the code or the
# README then rebuilds in seconds, not minutes.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt
COPY README.md ./
COPY connector/ connector/
COPY avro/ avro/
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
# The repository URL: docker build --build-arg SOURCE=https://... .
ARG SOURCE=""
LABEL org.opencontainers.image.title="rpt-connector" \
      org.opencontainers.image.description="Exactly-once Kafka source connector for the SMS platform's get-rpt API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HEALTHCHECK_URL=http://127.0.0.1:9108/healthz

COPY constraints.txt /tmp/constraints.txt
COPY --from=build /src/requirements.txt /tmp/requirements.txt
RUN python -m pip install --no-cache-dir -c /tmp/constraints.txt -r /tmp/requirements.txt
# The native wheel before the connector's: a change to connector/ does not reinstall it.
COPY --from=native /wheels /tmp/native
RUN python -m pip install --no-cache-dir --no-deps /tmp/native/*.whl && rm -rf /tmp/native
COPY --from=build /wheels /tmp/wheels
RUN python -m pip install --no-cache-dir --no-deps -c /tmp/constraints.txt /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/constraints.txt /tmp/requirements.txt

# A fixed uid so a host-mounted spool directory can be chowned to it (10001). The spool holds
# reports (phone numbers): only its user may read it (0700; the spool writes files 0600).
RUN groupadd --system --gid 10001 rpt \
    && useradd --system --uid 10001 --gid rpt --home-dir /var/lib/rpt-connector \
       --shell /usr/sbin/nologin rpt \
    && mkdir -p /var/lib/rpt-connector /etc/rpt-connector \
    && chown rpt:rpt /var/lib/rpt-connector \
    && chmod 0700 /var/lib/rpt-connector
COPY config/connector.example.toml /etc/rpt-connector/connector.example.toml

USER 10001:10001
# The spool holds reports already taken from the platform and not yet in Kafka: it must
# outlive the container.
VOLUME ["/var/lib/rpt-connector"]
EXPOSE 9108

# The metrics port follows [metrics] listen; set HEALTHCHECK_URL when it is not 9108.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"]

ENTRYPOINT ["rpt-connector"]
CMD ["run", "--config", "/etc/rpt-connector/connector.toml"]
