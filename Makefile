# The commands CI runs (.ci/run calls these targets), so a developer runs exactly what CI runs.
GOLANGCI_LINT_VERSION := v2.15.0
GOBIN ?= $(shell go env GOPATH)/bin
GOLANGCI_LINT := $(GOBIN)/golangci-lint
FUZZTIME ?= 20s

.PHONY: all test race lint fmt vet fuzz bench ci

all: fmt vet lint test

test: ## the README's test command
	go test ./...

race:
	go test -race -count=1 ./...

fmt: ## fails when gofmt would change a tracked file
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	go vet ./...

$(GOLANGCI_LINT):
	GOFLAGS= go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

lint: $(GOLANGCI_LINT)
	@v=$$($(GOLANGCI_LINT) version --short 2>/dev/null || $(GOLANGCI_LINT) --version); \
	case "$$v" in *$(patsubst v%,%,$(GOLANGCI_LINT_VERSION))*) ;; *) echo "golangci-lint $$v is not the pinned $(GOLANGCI_LINT_VERSION): reinstalling"; GOFLAGS= go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION);; esac
	$(GOLANGCI_LINT) run ./...

fuzz:
	go test ./wechat -run '^$$' -fuzz '^FuzzParseV2Response$$' -fuzztime $(FUZZTIME)
	go test ./wechat -run '^$$' -fuzz '^FuzzV3ResponseHeaders$$' -fuzztime $(FUZZTIME)
	go test ./wechat/sandbox -run '^$$' -fuzz '^FuzzParseV2XMLFast$$' -fuzztime $(FUZZTIME)

bench: ## the benchmark command (figures as ratios against baselines from the same run)
	go run ./cmd/bench

ci: fmt vet lint test race fuzz
