# syntax=docker/dockerfile:1
#
# The operator's container image: one static (musl) binary on an empty base, run as the
# non-root user 65532, which the Helm chart's and deploy/'s security contexts expect.
#
#   docker build -t jwt-key-rotator:0.1.0 .
#   docker build --build-arg RUST_VERSION=1.95 -t jwt-key-rotator:dev .
#
# The test suite builds this image without a container engine (tests/image/build.sh): it runs
# the build stage's cargo command on the host, then buildah runs the final stage below as it is,
# and the test node runs the result as the chart's pod. Keep the final stage's paths
# (/jwt-key-rotator, /etc/ssl/certs/ca-certificates.crt in `build`) as they are: the script
# copies the binary and the CA bundle there.

# ---- build: a statically linked binary --------------------------------------------------
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
# musl-gcc compiles ring's C and assembly parts for the musl target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
# Tell ring's build script (the cc crate) which C compiler targets musl, on either architecture.
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CC_aarch64_unknown_linux_musl=musl-gcc
WORKDIR /src
# The target triple for the build machine's architecture (x86_64 or aarch64).
RUN echo "$(uname -m)-unknown-linux-musl" > /target \
 && rustup target add "$(cat /target)"
# Dependencies first, in a layer of their own that survives source edits: build them
# against placeholder sources (Cargo.toml names a library, the binary and a bench).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/keygen.rs \
 && cargo build --release --locked --target "$(cat /target)" \
 && rm -rf src benches
# Then the operator itself.
COPY src src
COPY benches benches
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --target "$(cat /target)" --bin jwt-key-rotator \
 && cp "target/$(cat /target)/release/jwt-key-rotator" /jwt-key-rotator

# ---- run: nothing but the binary and the CA bundle (tests/image/build.sh runs this stage) -
FROM scratch
# Root certificates, for API servers whose certificate a public CA signed (in cluster, the
# ServiceAccount's own ca.crt is what the operator trusts).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /jwt-key-rotator /jwt-key-rotator
# The "nonroot" user of distroless images; no /etc/passwd is needed for a numeric user.
USER 65532:65532
# The metrics, health and readiness endpoint (run --metrics-addr, default 0.0.0.0:8080).
EXPOSE 8080
ENTRYPOINT ["/jwt-key-rotator"]
CMD ["run"]
