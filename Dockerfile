# Builds the single flashsale binary; the compose file runs it as migrate,
# api and worker.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/flashsale ./cmd/flashsale

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/flashsale /usr/local/bin/flashsale
ENTRYPOINT ["/usr/local/bin/flashsale"]
