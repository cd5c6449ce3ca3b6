# One image with both binaries: /ferrolb-controller and /ferrolb-speaker.
# Untested on the development machine (no container engine there); kept to the standard
# multi-stage pattern.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p controller -p speaker \
 && cp target/release/ferrolb-controller target/release/ferrolb-speaker /

# distroless/cc has glibc and libgcc, nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /ferrolb-controller /ferrolb-speaker /
USER 65534:65534
ENTRYPOINT ["/ferrolb-controller"]
