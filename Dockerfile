# flightrec container image: the Rust binary on a slim Debian base, running
# as an unprivileged user (uid 10001) with a read-only-friendly layout.
#
#   docker build -t flightrec .
#   docker run --network host -v flightrec-data:/var/lib/flightrec flightrec
#
# Paths: config at /etc/flightrec/flightrec.toml (mount it and pass
# `run --config /etc/flightrec/flightrec.toml`), bundles (the spool) at
# /var/lib/flightrec. Without a config the built-in defaults apply, with the
# spool moved to /var/lib/flightrec. Every key can be set with
# FLIGHTREC_SECTION__KEY variables.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY agent agent
COPY proto proto
COPY deploy/docker/build.sh deploy/docker/build.sh
# The same script tests/run.sh runs: cargo build --release --locked.
RUN deploy/docker/build.sh /out

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 flightrec \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin flightrec \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/flightrec \
 && install -d -m 0755 /etc/flightrec
COPY --from=build /out/flightrec /usr/local/bin/flightrec
USER 10001:10001
WORKDIR /var/lib/flightrec
ENV FLIGHTREC_SNAPSHOTS__DIR=/var/lib/flightrec \
    FLIGHTREC_LOG__FORMAT=json
VOLUME ["/var/lib/flightrec"]
EXPOSE 7070
ENTRYPOINT ["/usr/local/bin/flightrec"]
CMD ["run"]
