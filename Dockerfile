# Multi-stage build: a locked release build, then a small non-root runtime.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin weir

# distroless/cc: glibc + libgcc, no shell; runs as uid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/weir /usr/local/bin/weir
COPY config/example.yaml /etc/weir/weir.yaml
USER 65532:65532
ENV WEIR_CONFIG=/etc/weir/weir.yaml
# Proxy and admin ports of config/example.yaml.
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["run"]
