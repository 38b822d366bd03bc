# drover's node image: droverd, the drover CNI plugin, the drover/local
# Flexvolume driver and its admin command, all static.
#
#   docker build -t ghcr.io/drover-net/drover:TAG .
#
# The DaemonSet (deploy/drover.yaml) runs /opt/drover/bin/droverd; its init
# container `droverd install` copies drover and local from the same
# directory onto the host.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO off: the plugin and the driver run on the host, outside this image,
# so they may depend on no library of it.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ \
        ./cmd/droverd ./plugins/drover ./flexvolume/local ./flexvolume/drover-volumes

# Kubernetes' kube-proxy base: iptables with the wrapper that picks the
# host's backend (legacy or nft), which droverd's chains must match.
FROM registry.k8s.io/build-image/distroless-iptables:v0.8.7
COPY --from=build /out/ /opt/drover/bin/
ENTRYPOINT ["/opt/drover/bin/droverd"]
