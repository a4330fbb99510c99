# syntax=docker/dockerfile:1.7
#
# One image per service from one Dockerfile:
#   docker build --build-arg SERVICE=order -t shop/order-service .
#
# Stages: `planner` reduces the workspace to a dependency recipe (cargo-chef), `builder`
# compiles the dependencies from that recipe first (a layer that only changes when
# Cargo.lock or a manifest does), then the workspace, and `runtime` is distroless: no shell,
# no package manager, a numeric non-root user. The binaries link glibc (librdkafka is C), so
# the base is distroless/cc rather than static; zlib is linked statically.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake g++ make pkg-config python3 \
    && rm -rf /var/lib/apt/lists/* \
    && cargo install cargo-chef --locked --version 0.1.73
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG SERVICE
ENV LIBZ_SYS_STATIC=1 CARGO_TERM_COLOR=never
COPY --from=planner /src/recipe.json recipe.json
RUN test -n "${SERVICE}" || (echo "--build-arg SERVICE=<user|product|cart|order|payment|notification> is required" >&2; exit 1)
RUN cargo chef cook --release --locked --recipe-path recipe.json --package "${SERVICE}-service"
COPY . .
RUN cargo build --release --locked --package "${SERVICE}-service" --bin "${SERVICE}-service" \
    && install -D "target/release/${SERVICE}-service" /out/service

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG SERVICE
LABEL org.opencontainers.image.source="https://github.com/shop-platform/shop" \
      org.opencontainers.image.title="${SERVICE}-service" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/service /usr/local/bin/service
# 65532 is distroless's `nonroot`; numeric so Kubernetes can check runAsNonRoot.
USER 65532:65532
ENV LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/service"]
