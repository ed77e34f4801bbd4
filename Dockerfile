# syntax=docker/dockerfile:1
#
# The `xinqiao` binary (hub, operations commands and client CLI) in a small runtime image.
#
#   docker build -t xinqiao:local .
#   docker run --rm xinqiao:local --help
#   docker run -d -p 7443:7443 -v "$PWD/pki:/etc/xinqiao/pki:ro" -v xinqiao-data:/var/lib/xinqiao \
#       xinqiao:local                  # serve, SQLite in the volume, PKI from `xinqiao certs init`
#
# Build stage: only the CLI crate (package xinqiao-cli, binary xinqiao), from the committed lock
# file. Its build script compiles the .proto files with protox, so no protoc is needed; SQLite is
# bundled and TLS is rustls on ring, so the binary links only glibc and libgcc.
#
# Runtime stage: Debian slim rather than distroless, on purpose: compose's one-shot init scripts
# need /bin/sh, and the Kubernetes preStop hook runs `sleep`. Nothing is installed in it.

ARG RUST_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# The target directory lives in a cache mount, so the binary is copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p xinqiao-cli --bin xinqiao \
    && install -D -m 0755 target/release/xinqiao /out/xinqiao

FROM ${RUNTIME_IMAGE} AS runtime
# One unprivileged user, numeric so that Kubernetes' runAsNonRoot can check it. The data directory
# and the PKI mount point belong to it: a fresh named volume mounted there takes that ownership,
# which is how compose's init container may write the PKI into its volume.
RUN groupadd --system --gid 10001 xinqiao \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/xinqiao --no-create-home \
        --shell /usr/sbin/nologin xinqiao \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/xinqiao /etc/xinqiao/pki
# The container's default configuration: every address on the container's interfaces, the PKI
# mounted at /etc/xinqiao/pki (as `xinqiao certs init` writes it: ca.crt, server.crt/.key,
# crl.pem), SQLite in the data volume, and the metrics/probe listener that HEALTHCHECK asks.
# Mount another file over it, or set XINQIAO_CONFIG; deploy/xinqiao.toml documents every key.
RUN printf '%s\n' \
        '# Container defaults, written by the Dockerfile; deploy/xinqiao.toml documents every key.' \
        'listen = "0.0.0.0:7443"' \
        'data_dir = "/var/lib/xinqiao"' \
        '' \
        '[tls]' \
        'ca = "/etc/xinqiao/pki/ca.crt"' \
        'cert = "/etc/xinqiao/pki/server.crt"' \
        'key = "/etc/xinqiao/pki/server.key"' \
        'crl = "/etc/xinqiao/pki/crl.pem"' \
        '' \
        '[metrics]' \
        'listen = "0.0.0.0:9464"' \
        > /etc/xinqiao/xinqiao.toml
COPY --from=build /out/xinqiao /usr/local/bin/xinqiao
# The shared schemas (for `xinqiao schema import`) and the example catalogue entries, so that the
# client commands of the README work from inside a container too.
COPY schemas/ /usr/share/xinqiao/schemas/
COPY deploy/examples/ /usr/share/xinqiao/examples/
COPY deploy/xinqiao.toml /usr/share/xinqiao/xinqiao.example.toml

# XINQIAO_CONFIG is read by `serve` (and the operations commands); XINQIAO_PKI is where client
# commands run in the container find certificates for --as.
ENV XINQIAO_CONFIG=/etc/xinqiao/xinqiao.toml \
    XINQIAO_PKI=/etc/xinqiao/pki
USER 10001:10001
WORKDIR /var/lib/xinqiao
VOLUME ["/var/lib/xinqiao"]
# 7443: gRPC over mutual TLS. 9464: plain HTTP /metrics, /healthz, /readyz (monitoring network only).
EXPOSE 7443 9464
# SIGTERM: the hub stops accepting, reports 503 on /readyz and lets calls finish
# (limits.shutdown_grace_secs, 30 s by default): give `docker stop` a longer --time.
STOPSIGNAL SIGTERM
# `check` exits 0 (ok), 1 (warning: e.g. a certificate expiring within 30 days) or 2 (critical,
# which includes /readyz not answering 200). A warning is still a serving hub, so only 2 and
# anything worse count as unhealthy; Docker itself wants 0 or 1.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["/bin/sh", "-c", "xinqiao check --config \"$XINQIAO_CONFIG\" --hub-ready; test $? -lt 2"]
ENTRYPOINT ["/usr/local/bin/xinqiao"]
CMD ["serve"]
