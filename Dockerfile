# syntax=docker/dockerfile:1
# Multi-stage build: a Rust builder with a dependency cache layer, then a distroless non-root
# runtime with only the binary. `.ci/run` builds the same binary the same way
# (`cargo build --release --locked --bin pullsecret-injector`).

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

# Dependencies first: this layer is rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches examples \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/admission.rs \
 && echo 'fn main() {}' > examples/fixed_answer.rs \
 && cargo build --release --locked --bin pullsecret-injector \
 && rm -rf src benches examples

COPY src ./src
COPY benches ./benches
COPY examples ./examples
# Touch so cargo rebuilds our crate over the cached placeholder.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin pullsecret-injector

# glibc (ring links libc dynamically), CA certificates, and the nonroot user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/pullsecret-injector /usr/local/bin/pullsecret-injector
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/pullsecret-injector"]
CMD ["serve", "--config", "/etc/pullsecret-injector/config/config.yaml"]
