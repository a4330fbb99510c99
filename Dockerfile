# syntax=docker/dockerfile:1.7
#
# The six service images from one Dockerfile, one target each:
#   docker build --target order -t shop/order-service .
#   docker build --target order --build-arg PROFILE=image-dev -t shop/order-service .   # fast
#
# Stages: `build` compiles the whole workspace's binaries in one cargo invocation, so the
# dependencies (librdkafka among them) are compiled once for all six images; it does not
# depend on which image is asked for, so BuildKit runs it once when Skaffold or CI builds the
# six targets. Its cargo registry and target directory are BuildKit cache mounts that outlive
# the build: after an edit, cargo recompiles the changed crates and relinks the binaries that
# depend on them, and the other images' layers come out identical (same digest, no rollout).
# Each service's target copies its one binary onto distroless: no shell, no package manager, a
# numeric non-root user. The binaries link glibc (librdkafka is C), so the base is
# distroless/cc rather than static; zlib is linked statically, and librdkafka's TLS and SCRAM
# use the system's libssl (ADR 0013): libssl-dev to build, distroless/cc's libssl3 to run.
#
# PROFILE is `release` (fat LTO, one codegen unit: the published images, staging and prod) or
# `image-dev` (no LTO, incremental: `skaffold dev`); Cargo.toml defines both.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS toolchain
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake g++ make pkg-config python3 libssl-dev \
    && rm -rf /var/lib/apt/lists/*
# cargo-auditable embeds each binary's crate list (name, version, source) in a linker section
# (under 4 kB): CI's SBOM of an image (syft, CycloneDX) lists the crates from it.
RUN cargo install cargo-auditable --locked --version 0.7.7
WORKDIR /src

FROM toolchain AS build
ARG PROFILE=release
ENV LIBZ_SYS_STATIC=1 CARGO_TERM_COLOR=never
COPY . .
# The cache mounts are per profile (the two never share a target directory) and locked, so
# two builds that reach this step at once take turns instead of racing on one directory.
# Cargo judges a workspace crate stale by its files' mtimes, which COPY does not promise to
# keep: mark-changed-sources.sh sets them by content (unchanged: ancient, changed: now), so a
# stale crate is never reused and an unchanged one never recompiled.
# `target/<profile>` is cargo's directory for every profile but `dev`, which is not used here.
RUN --mount=type=cache,id=shop-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=shop-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=shop-target-${PROFILE},target=/src/target,sharing=locked \
    sh xtask/docker/mark-changed-sources.sh target/.shop-sources.sha256 \
    && cargo auditable build --locked --profile "${PROFILE}" \
        -p user-service -p product-service -p cart-service \
        -p order-service -p payment-service -p notification-service \
    && sh xtask/docker/mark-changed-sources.sh --save target/.shop-sources.sha256 \
    && mkdir -p /out \
    && for service in user product cart order payment notification; do \
        cp "target/${PROFILE}/${service}-service" "/out/${service}-service"; \
    done

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.source="https://github.com/shop-platform/shop" \
      org.opencontainers.image.licenses="Apache-2.0"
# 65532 is distroless's `nonroot`; numeric so Kubernetes can check runAsNonRoot.
USER 65532:65532
# The commit the image is built from (CI passes it), reported by `shop_build_info`.
ARG GIT_COMMIT=unknown
ENV LISTEN_ADDR=0.0.0.0:8080 SHOP_BUILD_COMMIT=${GIT_COMMIT}
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/service"]

FROM runtime AS user
LABEL org.opencontainers.image.title="user-service"
COPY --from=build /out/user-service /usr/local/bin/service

FROM runtime AS product
LABEL org.opencontainers.image.title="product-service"
COPY --from=build /out/product-service /usr/local/bin/service

FROM runtime AS cart
LABEL org.opencontainers.image.title="cart-service"
COPY --from=build /out/cart-service /usr/local/bin/service

FROM runtime AS order
LABEL org.opencontainers.image.title="order-service"
COPY --from=build /out/order-service /usr/local/bin/service

FROM runtime AS payment
LABEL org.opencontainers.image.title="payment-service"
COPY --from=build /out/payment-service /usr/local/bin/service

FROM runtime AS notification
LABEL org.opencontainers.image.title="notification-service"
COPY --from=build /out/notification-service /usr/local/bin/service
