# Balanciaga4 — common tasks. `make` alone runs the demo (`make run`).
#
#   make run            build, start two demo backends and the balancer on 127.0.0.1:8080
#   make test           rustfmt check, clippy (warnings are errors), the tests (release binary)
#   make test-deps      install the Debian packages some tests need (as root; CI runs it)
#   make test-soak      the chaos soak for a minute (kills, drains, reloads; docs/RELIABILITY.md)
#   make build          release build of the balancer and the examples
#   make check          validate config/balanciaga4.ron without starting
#   make bench          the project's own benchmarks (policy picks, allocations, TCP and UDP relay)
#   make bench-compare  compare against HAProxy and nginx with ../shared/bench/compare.sh
#   make fuzz           run each fuzz target for FUZZ_SECONDS (default 30); needs nightly and cargo-fuzz
#   make clean          remove build output

SHELL := bash
.DEFAULT_GOAL := run
.PHONY: run test test-deps test-soak build check bench bench-compare fuzz clean toolchain help

B4 := target/release/balanciaga4
DEMO_BACKEND := target/release/examples/demo_backend
DEMO_CONFIG := config/demo.ron
BENCH := ../shared/bench/compare.sh
BENCH_OUT := /tmp/b4-bench.json
# Seconds measured per run of the relay benches; the whole of `make bench`
# takes about a minute and a half on 2 cores with the defaults.
BENCH_SECONDS := 3
UDP_BENCH_SECONDS := 2
# Seconds each fuzz target runs in `make fuzz` (`make fuzz FUZZ_SECONDS=600`).
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := config duration cidr proxy_protocol admin_http client_hello

# The balancer runs in the foreground; the backends run in the background and
# are killed by the EXIT trap when the balancer exits (Ctrl-C, SIGTERM, error).
run: build
	@for port in 8080 9001 9002 9090; do \
		if (exec 3<>/dev/tcp/127.0.0.1/$$port) 2>/dev/null; then \
			echo "make run: 127.0.0.1:$$port is already in use; stop whatever listens there" >&2; \
			exit 1; \
		fi; \
	done
	@echo
	@echo "Demo: backends alpha (127.0.0.1:9001) and beta (127.0.0.1:9002) behind balanciaga4 on 127.0.0.1:8080."
	@echo "Try:  curl http://127.0.0.1:8080/     (answers alternate alpha / beta)"
	@echo "      http://127.0.0.1:9090/          (live status page; /metrics, /stats)"
	@echo "Stop: Ctrl-C"
	@echo
	@$(DEMO_BACKEND) --listen 127.0.0.1:9001 --name alpha & alpha=$$!; \
	$(DEMO_BACKEND) --listen 127.0.0.1:9002 --name beta & beta=$$!; \
	trap 'kill $$alpha $$beta 2>/dev/null; wait' EXIT; \
	trap 'exit 130' INT; \
	trap 'exit 143' TERM; \
	sleep 0.3; \
	if ! kill -0 $$alpha 2>/dev/null || ! kill -0 $$beta 2>/dev/null; then \
		echo "make run: a demo backend did not start (see its message above)" >&2; \
		exit 1; \
	fi; \
	$(B4) --config $(DEMO_CONFIG)

# The tests run the balancer built with the release profile it ships with,
# but are themselves compiled with the test-fast profile (no LTO), which
# saves most of the build time. No test runs the examples, so only the
# balancer gets the (slow) release build; cargo test still compiles them.
TEST_PROFILE := test-fast
TEST_ENV := BALANCIAGA4_BIN=$(abspath $(B4))
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# Tests that could not run here (a program missing, not root) append a line
# to this file (tests/support/skip.rs); `make test` empties it first and
# sums it up last. Under CI=true such a test fails instead.
SKIPPED := $(TARGET_DIR)/skipped-tests.txt
# The end-to-end tests mostly wait on sockets and timers, not on the CPU:
# four at a time on 2 cores take a third of the time two do.
E2E_THREADS := 4

# Debian packages the tests need; `make test-deps` installs them and CI
# runs it. chromium: headless browser for the status page tests (fonts come
# with it, through fontconfig's dependency on fonts-dejavu-core). dnsmasq,
# bind9-dnsutils (dig): a real DNS exchange through a UDP listener (dnsmasq
# is started by the test on a loopback port). haproxy, nginx (its stream
# module comes as libnginx-mod-stream, a dependency): PROXY protocol
# interoperability. iproute2 (ip netns), procps (sysctl): the network
# namespaces and ECMP route of the ECMP test. openssl (certificates,
# s_server backends, s_client) and curl: real TLS handshakes routed by
# server name and ALPN.
TEST_DEPS := chromium dnsmasq bind9-dnsutils haproxy nginx iproute2 procps openssl curl

test: toolchain
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo build --release --bin balanciaga4
	@mkdir -p $(TARGET_DIR) && : > $(SKIPPED)
	@status=0; \
	$(TEST_ENV) cargo test --profile $(TEST_PROFILE) --lib --test module_graph || status=$$?; \
	$(TEST_ENV) cargo test --profile $(TEST_PROFILE) --test end_to_end -- --test-threads $(E2E_THREADS) || status=$$?; \
	if [ ! -s $(SKIPPED) ]; then \
		echo "make test: nothing skipped$$([ $$status = 0 ] || echo ' by the tests that ran')"; \
	else \
		echo; sed 's/^/skipped: /' $(SKIPPED); \
		packages=$$(sed -n 's/.*(apt package: \(.*\))$$/\1/p' $(SKIPPED) | tr ' ' '\n' | sort -u | paste -sd ' '); \
		echo "make test: $$(wc -l < $(SKIPPED)) tests skipped ($(SKIPPED))$${packages:+, for want of $$packages; install with: sudo make test-deps}"; \
	fi; \
	exit $$status

test-deps:
	DEBIAN_FRONTEND=noninteractive apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(TEST_DEPS)

# `make test` runs the same soak for 8 s.
test-soak: build
	SOAK_SECONDS=60 $(TEST_ENV) cargo test --profile $(TEST_PROFILE) --test end_to_end control::soak:: -- --nocapture

build:
	cargo build --release --bins --examples

check: build
	$(B4) --check --config config/balanciaga4.ron

bench: build
	cargo bench --bench policy_pick
	cargo bench --bench allocations
	BENCH_SECONDS=$(BENCH_SECONDS) cargo bench --bench tcp_relay
	cargo bench --bench udp_throughput -- --seconds $(UDP_BENCH_SECONDS)

bench-compare: build
	@if [ ! -f $(BENCH) ]; then \
		echo "make bench-compare: $(BENCH) not found; the benchmark harness lives in shared/bench beside this checkout" >&2; \
		exit 1; \
	fi
	bash $(BENCH) --out $(BENCH_OUT) --candidate '$(B4) --listen {listen} {backend_flags}'

# Fuzzing needs nightly and cargo-fuzz; `make test` never does. Each target
# starts from its seeds (fuzz/seeds/, kept in git) and grows its own corpus
# (fuzz/corpus/, not kept); a crash stops the run and leaves its input in
# fuzz/artifacts/TARGET/.
fuzz:
	@if ! cargo +nightly --version >/dev/null 2>&1; then \
		echo "make fuzz: needs a nightly toolchain: rustup toolchain install nightly --profile minimal" >&2; \
		exit 1; \
	fi
	@if ! cargo fuzz --version >/dev/null 2>&1; then \
		echo "make fuzz: needs cargo-fuzz: cargo install cargo-fuzz" >&2; \
		exit 1; \
	fi
	@for target in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$target; \
		echo "== $$target ($(FUZZ_SECONDS) s)"; \
		cargo +nightly fuzz run $$target fuzz/corpus/$$target fuzz/seeds/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

clean:
	cargo clean

# rustfmt and clippy are rustup components that a minimal toolchain may lack.
toolchain:
	@if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then \
		echo "installing the rustfmt and clippy components"; \
		rustup component add rustfmt clippy; \
	fi

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))
