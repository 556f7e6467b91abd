# syntax=docker/dockerfile:1
# Multi-stage build. Targets:
#   splitter (the default, last stage): the sidecar
#   backend: the example backend used by docker-compose.yaml
# Both final images are distroless static, run as the nonroot user (65532),
# and hold a single static binary.

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so source edits do not invalidate the module cache layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ENV CGO_ENABLED=0
RUN go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/splitter ./cmd/splitter \
 && go build -trimpath -ldflags "-s -w" -o /out/backend ./examples/backend

FROM gcr.io/distroless/static-debian12:nonroot AS backend
COPY --from=build /out/backend /usr/local/bin/backend
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/backend"]

FROM gcr.io/distroless/static-debian12:nonroot AS splitter
COPY --from=build /out/splitter /usr/local/bin/splitter
USER nonroot:nonroot
# 9001: gRPC (ext_proc, ext_authz, health); 9002: admin HTTP.
EXPOSE 9001 9002
ENTRYPOINT ["/usr/local/bin/splitter"]
CMD ["serve"]
