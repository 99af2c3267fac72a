# syntax=docker/dockerfile:1
# Multi-stage build: a Rust builder, then a distroless non-root runtime with only the binary.
# The builder keeps the crate registry and the target dir in BuildKit cache mounts instead of
# a placeholder-crate layer, so nothing here lists the crate's targets (and nothing drifts
# when one is added). `.ci/dockerfile-replay` replays the builder in CI, without Docker: its
# COPY lines into a scratch WORKDIR, then each RUN command there, so keep RUN paths relative to
# the WORKDIR.

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

# build.rs too: cargo builds the package as the repository declares it.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
# A cache mount is not part of the image: copy the binary out of it. CARGO_TARGET_DIR is
# unset here (target/ is the mount); the replay sets it to the repository's target/.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin pullsecret-injector \
 && cp "${CARGO_TARGET_DIR:-target}/release/pullsecret-injector" ./pullsecret-injector

# glibc (ring links libc dynamically), CA certificates, and the nonroot user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/pullsecret-injector /usr/local/bin/pullsecret-injector
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/pullsecret-injector"]
CMD ["serve", "--config", "/etc/pullsecret-injector/config/config.yaml"]
