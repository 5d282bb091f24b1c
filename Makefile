# flashsale: `make run` runs it, `make test` tests it.
GO      ?= go
BIN     := bin/flashsale
PKGS    := ./...

.PHONY: all build run test vet fmt bench chaos fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/flashsale

## run: the API and three workers against the configured (or private) Redis and PostgreSQL
run: build
	./$(BIN) dev

## test: every test, against the real Redis and PostgreSQL, with the race detector
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

## fuzz: each fuzz target of hostile input for FUZZTIME (default 10s), against the real Redis and PostgreSQL
FUZZTIME ?= 10s
FUZZ_TARGETS := FuzzPlaceOrder FuzzProductRequests FuzzPathParams
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		echo "== $$t ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) ./api/ || exit 1; \
	done

## bench: the figures of BENCHMARKS.md: the product (hot, spread, backlog, one-by-one)
## next to the queue ceiling, the HTTP front and the lock-in-request design, 20,000 orders each
## (a few minutes; uses Redis DB 13 and databases flashsale_bench_* on 127.0.0.1,
## and removes them). BENCH_FLAGS adds flags, e.g. BENCH_FLAGS='-note "shared machine"'.
bench: build
	$(GO) run ./internal/bench/cmd/bench -binary $(BIN) -out BENCHMARKS.md -command 'make bench' $(BENCH_FLAGS)

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin

## chaos: the fault suite alone (also part of `make test`)
chaos:
	$(GO) test -count=1 -timeout 15m -v -run TestFaults ./chaos/
