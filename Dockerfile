# One image recipe for the five services: docker build --build-arg SERVICE=auth .
FROM rust:1.95-bookworm AS build
ARG SERVICE
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package "${SERVICE}" \
    && cp "target/release/${SERVICE}" /usr/local/bin/service

FROM debian:bookworm-slim
RUN useradd --system --no-create-home app
COPY --from=build /usr/local/bin/service /usr/local/bin/service
USER app
ENV REWARDS_HTTP__HOST=0.0.0.0
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/service"]
