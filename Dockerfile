# syntax=docker/dockerfile:1
# The operator image: the release binary on distroless (glibc, CA roots, no
# shell), as a non-root user. Both stages are Debian 12, so glibc matches.
# Build: docker build -t tokensmith:dev .

FROM rust:1.95-bookworm AS build
WORKDIR /src
# aws-lc-rs compiles its C core with the image's gcc; nothing else to install.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tokensmith && \
    cp target/release/tokensmith /tokensmith

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /tokensmith /usr/local/bin/tokensmith
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/tokensmith"]
CMD ["run"]
