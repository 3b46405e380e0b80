# vm-dhcp-agent image: a static binary on an empty base.
# Build from the repository root:
#   docker build -f build/agent.Dockerfile --build-arg VERSION=$(cat VERSION) -t vm-dhcp/vm-dhcp-agent:TAG .
# Offline (no golang base image): `make build`, then add --build-arg BINARY=prebuilt
# to copy bin/vm-dhcp-agent instead; `make images-offline` does the same without
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
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/vm-dhcp/vm-dhcp/internal/version.Version=${VERSION}" -o /out/vm-dhcp-agent ./coredhcp-build

FROM scratch AS prebuilt
COPY bin/vm-dhcp-agent /out/vm-dhcp-agent

FROM ${BINARY} AS binary

FROM scratch
COPY --from=binary /out/vm-dhcp-agent /vm-dhcp-agent
# The agent runs as root inside its container because a non-root process does
# not get the capabilities Kubernetes adds (no ambient capabilities). The pod the
# controller creates drops ALL capabilities and adds back only NET_ADMIN (server
# IP on eth1 by netlink), NET_BIND_SERVICE (port 67) and NET_RAW, with a
# read-only root filesystem and no privilege escalation. No shell, no `ip`.
USER 0:0
ENTRYPOINT ["/vm-dhcp-agent"]
