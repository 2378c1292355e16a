// Drives a real `tern` binary with the official Go SDK (github.com/upstash/qstash-go),
// unmodified. The versions are pinned here and in go.sum: `go test` reads both and never
// edits them (the default -mod=readonly), so it needs only the Go module proxy.
module tern.local/sdktests

go 1.22.2

require (
	github.com/golang-jwt/jwt/v5 v5.2.1
	github.com/upstash/qstash-go v1.0.0
)
