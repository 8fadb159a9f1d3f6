# syntax=docker/dockerfile:1
ARG BASE=debian
FROM --platform=linux/amd64 ${BASE}:bookworm AS build
MAINTAINER Someone <someone@example.com>
LABEL org.opencontainers.image.title="everything" version=1
ENV APP=/app \
    MODE=test
WORKDIR $APP
SHELL ["/bin/sh", "-ec"]
RUN --mount=type=cache,target=/var/cache/apt <<EOF
apt-get update
EOF
COPY --chown=1000:1000 --chmod=0644 . .
ADD --link https://example.com/a.tar.gz /opt/
USER 1000
EXPOSE 8080/tcp
VOLUME ["/data"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --timeout=3s CMD wget -qO- localhost:8080/health || exit 1
ONBUILD COPY . /src
ENTRYPOINT ["/app/run"]
CMD ["--serve"]

FROM ${BASE}
ARG MODE
COPY --from=build /app /app
