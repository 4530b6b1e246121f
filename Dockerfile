# The forgeq image: the worker (with its web process) and the enqueue CLI,
# as static binaries on a distroless base with no shell, running as a
# non-root user. Build: docker build -t forgeq . (or docker compose build).
# internal/deploy's tests parse this file and run its go build commands.

# Build stage. go.mod and go.sum come first, so the module download is a
# layer of its own that only a dependency change invalidates.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static binaries: no cgo, so no libc to find in the final image.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/worker ./cmd/worker
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/enqueue ./cmd/enqueue

# Final stage: CA certificates (for rediss://), time zone data and
# /etc/passwd with the nonroot user (65532), nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/worker /out/enqueue /
# Numeric, so that a runtime can check it is not root without /etc/passwd
# (Kubernetes' runAsNonRoot).
USER 65532:65532
EXPOSE 8080
# The web process listens on every interface of the container. The worker
# refuses a non-loopback address without HTTP_AUTH_USERNAME and
# HTTP_AUTH_PASSWORD, so `docker run` needs them too (or HTTP_ADDR=off, or
# a loopback HTTP_ADDR for a worker whose web process nobody should reach).
ENV HTTP_ADDR=0.0.0.0:8080
# No curl in this image: the worker itself probes its readiness endpoint
# (exit 0 on a 2xx answer). Assumes the web process on port 8080.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/worker", "--probe", "http://127.0.0.1:8080/health/ready"]
# Exec form: the worker is PID 1 and gets SIGTERM itself. The CLI is
# /enqueue (docker run --entrypoint /enqueue forgeq --list).
ENTRYPOINT ["/worker"]
