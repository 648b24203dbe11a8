# syntax=docker/dockerfile:1
# The pii-vault server image: the release binary on distroless (glibc, CA
# certificates, no shell, no package manager), running as a numeric non-root
# user. Build: docker build -t pii-vault:0.1.0 .

FROM rust:1-bookworm AS build
WORKDIR /src
# protoc comes from the protoc-bin-vendored crate: nothing else to install.
# Line tables are left out of the image's binary (the release profile keeps
# them for local profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_TERM_COLOR=never
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
# The workspace names the load generator crate; it is not built into the image.
COPY bench ./bench
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin pii-vault \
    && install -D -m 0755 target/release/pii-vault /out/pii-vault

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/pii-vault /usr/local/bin/pii-vault
# 65532 is distroless's "nonroot"; numeric so that runAsNonRoot can verify it.
USER 65532:65532
# gRPC, and Prometheus metrics (/metrics) when --metrics-listen is given.
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/pii-vault"]
CMD ["serve", "--listen", "0.0.0.0:50051", \
     "--data-dir", "/var/lib/pii-vault/store", \
     "--keyring-file", "/var/lib/pii-vault/keyring/keyring", \
     "--root-key-file", "/etc/pii-vault/root-key/root.key", \
     "--policy", "/etc/pii-vault/policy/policy.toml", \
     "--log-format", "json"]
