# weir container image: multi-stage, `--locked` release build, distroless
# runtime running as uid 65532 (no shell, no package manager).
#
#   docker build -t weir .
#   docker run --rm -p 8080:8080 -p 9901:9901 -v $PWD/config/docker:/etc/weir:ro weir
#
# CI has no container engine: .ci/run runs the exact `cargo build` line below
# on the host and starts the binary with config/docker/weir.yaml.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Build-time settings (jemalloc's compiled-in defaults).
COPY .cargo ./.cargo
COPY src ./src
COPY benches ./benches
COPY tests ./tests
COPY fuzz ./fuzz
RUN cargo build --release --locked --bin weir

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/weir /usr/local/bin/weir
COPY config/docker/weir.yaml /etc/weir/weir.yaml
ENV WEIR_CONFIG=/etc/weir/weir.yaml
# Rollout state and journal; mount a volume here (read-only root filesystem).
VOLUME /var/lib/weir
USER 65532:65532
# proxy (HTTP), proxy (TLS), admin
EXPOSE 8080 8443 9901
# No shell in the image: the binary probes its own admin endpoint.
HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/weir", "healthcheck", "http://127.0.0.1:9901/ready"]
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["run"]
