# Tether's build, run, test and benchmark entry points. Everything a target
# needs beyond Go and gcc is installed by .ci/run (apt) or fetched through
# the Go module proxy at a pinned version.

GO          ?= go
BIN         := bin/tether
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BENCHSTAT   := golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
BENCH_COUNT ?= 6
BENCH_OUT   ?= out/bench
LOAD_DEVICES ?= 1000
LOAD_SUBSCRIBERS ?= 1000
LOAD_DURATION ?= 10s
MOSQUITTO   ?= /usr/sbin/mosquitto
LOAD_ARGS    = -load.devices $(LOAD_DEVICES) -load.subscribers $(LOAD_SUBSCRIBERS)

.PHONY: build run test vet staticcheck bench fuzz clean web web-test browser-test screenshots

# The dashboard (web/) is built by Vite into internal/web/dist, which the
# binary embeds; npm installs exactly what package-lock.json pins, again
# only when the lock file changes.
WEB_DEPS := web/node_modules/.installed

$(WEB_DEPS): web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

web: $(WEB_DEPS)
	cd web && npm run build

build: web
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/tether

# Builds and starts a node with the embedded defaults (data in ./data) and
# a simulated demo fleet; `./bin/tether serve` starts one without it.
run: build
	./$(BIN) serve --demo

# The Go tests, the dashboard's component tests, then the browser tests
# against the built binary in Debian's Chromium.
test: vet staticcheck web-test build
	$(GO) test -race -timeout 9m ./...
	$(GO) test -race -tags modernc ./internal/store/sqlite/
	cd third_party/mochi-mqtt && $(GO) test -race ./...
	$(MAKE) browser-test

web-test: $(WEB_DEPS)
	cd web && npm test

browser-test:
	TETHER_BIN=$(CURDIR)/$(BIN) scripts/browser-test.sh

# Refreshes docs/screenshots from the browser tests' page-*.png.
screenshots: build browser-test
	for f in web/test-results/page-*.png; do cp "$$f" "docs/screenshots/$${f#web/test-results/page-}"; done

vet:
	$(GO) vet ./...
	cd third_party/mochi-mqtt && $(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...

# Micro-benchmarks of the hot path; then Tether's ingest target (1,000
# MQTT devices publishing QoS 1 at 5 messages/s of 10 values, 50,000
# points/s, three times); then Tether and Mosquitto side by side under the
# same load generator, each row once: MQTT fan-in (1,000 publishers) and
# fan-out (1,000 subscribers) at QoS 0 and 1, at an offered rate and at
# capacity, Tether's CoAP ingest, commands end to end (API call to device
# reply, 1,000 devices) and shadow updates; then ingest with 0, 10 and
# 100 rules; then the dashboard's device list over 100,000 devices, its
# 30-day history query and live streams to 100 WebSocket clients. Raw
# results land in $(BENCH_OUT); docs/benchmarks.md is
# written from them. About 20 minutes.
bench: SHELL := /bin/bash
bench: .SHELLFLAGS := -o pipefail -c
bench:
	@test -x $(MOSQUITTO) || command -v mosquitto >/dev/null || { \
		echo "make bench: Mosquitto ($(MOSQUITTO)) is missing; the side-by-side figures need it: sudo apt-get install mosquitto" >&2; exit 1; }
	mkdir -p $(BENCH_OUT)
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) \
		./internal/telemetry/ ./internal/bus/ ./internal/ingest/ ./internal/store/sqlite/ ./internal/writer/ | tee $(BENCH_OUT)/micro.txt
	$(GO) run $(BENCHSTAT) $(BENCH_OUT)/micro.txt | tee $(BENCH_OUT)/micro-stat.txt
	$(GO) test -run '^$$' -bench 'FanIn/qos=1/load=offered/broker=tether' -benchtime 1x -count 3 -timeout 30m ./cmd/tether/ \
		-args $(LOAD_ARGS) -load.duration 30s | tee $(BENCH_OUT)/load.txt
	$(GO) test -run '^$$' -bench 'FanIn|FanOut|CoAPIngest|Commands|ShadowUpdates' -benchtime 1x -count 1 -timeout 30m ./cmd/tether/ \
		-args $(LOAD_ARGS) -load.duration $(LOAD_DURATION) | tee $(BENCH_OUT)/side-by-side.txt
	$(GO) test -run '^$$' -bench 'Rules' -benchtime 1x -count 1 -timeout 30m ./cmd/tether/ \
		-args $(LOAD_ARGS) -load.duration $(LOAD_DURATION) | tee $(BENCH_OUT)/rules.txt
	$(GO) test -run '^$$' -bench 'Dashboard|Stream' -benchtime 1x -count 1 -timeout 30m ./cmd/tether/ \
		-args $(LOAD_ARGS) -load.duration $(LOAD_DURATION) | tee $(BENCH_OUT)/dashboard.txt

# A short run of every fuzzer; the seed corpora under testdata/fuzz run
# with every plain `go test`.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./internal/telemetry/
	$(GO) test -run '^$$' -fuzz FuzzUnmarshalMessage -fuzztime 30s ./internal/telemetry/
	$(GO) test -run '^$$' -fuzz FuzzCBORToJSON -fuzztime 30s ./internal/telemetry/
	$(GO) test -run '^$$' -fuzz FuzzParseQuery -fuzztime 15s ./internal/coap/
	$(GO) test -run '^$$' -fuzz FuzzIngest -fuzztime 30s ./internal/httpapi/
	$(GO) test -run '^$$' -fuzz FuzzMerge -fuzztime 30s ./internal/shadow/
	$(GO) test -run '^$$' -fuzz FuzzParseCSV -fuzztime 30s ./internal/provision/
	$(GO) test -run '^$$' -fuzz FuzzProfile -fuzztime 30s ./internal/profile/

clean:
	rm -rf bin out web/test-results
	find internal/web/dist -mindepth 1 ! -name .gitkeep -delete
