# drover: every target runs from a fresh clone; scripts/setup.sh installs
# what the tests, the demo and the benchmarks need (idempotent).

GO      ?= go
BIN     := $(CURDIR)/bin
GOFLAGS ?=

export GOFLAGS

.PHONY: all build test e2e bench demo lint setup clean

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./plugins/... ./flexvolume/... ./cmd/...

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e,e2ebench ./test/e2e/...

setup:
	bash scripts/setup.sh

test:
	bash scripts/test.sh

# The real-node suite alone (kubelet + containerd per node); make test runs it too.
e2e:
	bash scripts/e2e.sh

bench:
	bash scripts/bench.sh

demo:
	bash scripts/demo.sh

clean:
	rm -rf $(BIN)
