# vm-dhcp-controller image: a static binary on an empty base.
# Build from the repository root:
#   docker build -f build/controller.Dockerfile --build-arg VERSION=$(cat VERSION) -t vm-dhcp/vm-dhcp-controller:TAG .
# Offline (no golang base image): `make build`, then add --build-arg BINARY=prebuilt
# to copy bin/vm-dhcp-controller instead; `make images-offline` does the same without
# a container engine (hack/images reads this file).
# The go build line below is the one the Makefile's build target runs; the
# test in build/ builds exactly this command to keep them in step.
ARG GO_VERSION=1.26
# Where the binary comes from: the build stage below, or prebuilt (bin/).
ARG BINARY=build
FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=0.1.0
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/vm-dhcp/vm-dhcp/internal/version.Version=${VERSION}" -o /out/vm-dhcp-controller ./cmd/vm-dhcp-controller

FROM scratch AS prebuilt
COPY bin/vm-dhcp-controller /out/vm-dhcp-controller

FROM ${BINARY} AS binary

FROM scratch
COPY --from=binary /out/vm-dhcp-controller /vm-dhcp-controller
# Non-root: the binary needs no privilege.
USER 65532:65532
ENTRYPOINT ["/vm-dhcp-controller"]
