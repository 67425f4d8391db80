# Herald's image: multi-stage, dependencies cached in their own layer, a small
# runtime with a non-root user.
#   docker build -t herald .
#   docker run -v $PWD/herald.toml:/etc/herald/herald.toml -e HERALD_KAFKA__BROKERS=kafka:9092 herald

# Base images are pinned by digest (the tag is kept for reading): a rebuild
# uses the same bytes, and a changed image is a reviewed change here. To
# update one: docker buildx imagetools inspect IMAGE:TAG, and replace the
# digest (scripts/deploy_policy.py refuses images without one).
FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first: this layer is rebuilt only when Cargo.toml/Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
# (The manifest names tests/it/main.rs, so a stub stands in for it throughout.)
RUN mkdir -p src tests/it && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > tests/it/main.rs \
    && cargo build --release --locked --bin herald && rm -rf src
COPY config config
COPY src src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin herald

FROM debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home herald
COPY --from=build /src/target/release/herald /usr/local/bin/herald
COPY config/default.toml /etc/herald/default.toml
USER 10001
# Configuration: HERALD_SECTION__KEY variables, and/or a file mounted and named
# by HERALD_CONFIG (e.g. /etc/herald/herald.toml).
EXPOSE 9464
ENTRYPOINT ["herald"]
CMD ["run"]
