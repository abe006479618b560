# cti-server container image: a multi-stage build on Debian 12 (bookworm) slim.
#
#   docker build -t cti-server .
#   docker run -p 4000:4000 -e NODE_ENV=production -e TLS_TERMINATED_BY_PROXY=true \
#     -e INTERNAL_API_SECRET=... -e TOKEN_ENCRYPTION_KEY=... -v cti-data:/var/lib/cti-server cti-server
#
# The build stage installs what `tools/deps.sh build` lists and runs `make cti-server`
# (the optimized build, tcmalloc); the runtime stage keeps only the shared libraries
# the binary links (tests/blackbox/test_packaging.py checks both lists against
# tools/deps.sh and the binary's NEEDED entries) and runs as an unprivileged user.
# See docs/OPERATIONS.md for what was and was not run of this file.

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gcc make pkg-config libmicrohttpd-dev libjansson-dev libjwt-dev libcrypt-dev libssl-dev \
      libsqlite3-dev libpq-dev libgoogle-perftools-dev libcurl4-openssl-dev liburing-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY src ./src
COPY tools ./tools
RUN make -j"$(nproc)" cti-server && strip --strip-debug cti-server && ./cti-server --help >/dev/null

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libmicrohttpd12 libjansson4 libjwt0 libcrypt1 libssl3 libsqlite3-0 libpq5 libcurl4 \
      libtcmalloc-minimal4 liburing2 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 cti \
 && useradd --system --uid 10001 --gid cti --home-dir /var/lib/cti-server --no-create-home \
      --shell /usr/sbin/nologin cti \
 && mkdir -p /var/lib/cti-server && chown cti:cti /var/lib/cti-server && chmod 0700 /var/lib/cti-server
COPY --from=build /src/cti-server /usr/local/bin/cti-server

ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=4000 \
    DATA_DIR=/var/lib/cti-server \
    SHUTDOWN_TIMEOUT=10
VOLUME ["/var/lib/cti-server"]
WORKDIR /var/lib/cti-server
USER cti:cti
EXPOSE 4000
STOPSIGNAL SIGTERM
# /health answers 200 while the database answers a query, else 503.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS -o /dev/null "http://127.0.0.1:${PORT}/health" || exit 1
ENTRYPOINT ["/usr/local/bin/cti-server"]
