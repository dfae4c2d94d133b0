# Balanciaga4 — common tasks. `make` alone runs the demo (`make run`).
#
#   make run            build, start two demo backends and the balancer on 127.0.0.1:8080
#   make test           rustfmt check, clippy (warnings are errors), the tests (release binary)
#   make test-deps      install the Debian packages some tests need (as root; CI runs it)
#   make test-soak      the chaos soak for a minute (kills, drains, reloads; docs/RELIABILITY.md)
#   make build          release build of the balancer and the examples
#   make check          validate config/balanciaga4.ron without starting
#   make bench          the project's own benchmarks (policy picks, allocations, TCP and UDP relay)
#   make bench-scale    pick, snapshot and health-check cost against configuration size,
#                       with PNG plots in target/bench-scale/ (needs gnuplot; about 3 min)
#   make bench-compare  compare against HAProxy and nginx with ../shared/bench/compare.sh
#   make fuzz           run each fuzz target for FUZZ_SECONDS (default 30); needs nightly and cargo-fuzz
#   make install        install the binary, man page, systemd unit, logrotate file and an example
#                       config (PREFIX=/usr/local, DESTDIR=; as root; builds only if not built)
#   make uninstall      remove what make install installed, except the config and the logs
#   make deb            build a Debian package in target/ (needs dpkg-deb, not root)
#   make clean          remove build output

SHELL := bash
.DEFAULT_GOAL := run
.PHONY: run test test-deps test-soak build check bench bench-scale bench-compare fuzz clean toolchain help \
	install install-bin install-files uninstall deb

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
# server name and ALPN. redis-server, redis-tools (redis-benchmark):
# backends added and removed at run time under load. logrotate: rotating
# the access log with SIGUSR1. groff-base, man-db: the man page renders
# without warnings. systemd (systemd-analyze): CI verifies the installed
# unit.
TEST_DEPS := chromium dnsmasq bind9-dnsutils haproxy nginx iproute2 procps openssl curl \
	redis-server redis-tools logrotate groff-base man-db systemd

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

# benches/scale/run.sh checks for gnuplot first and says how to install it.
bench-scale:
	bash benches/scale/run.sh

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


# Installation. PREFIX holds the binary, the man page and (unless PREFIX is
# /usr, where Debian keeps units in /lib) the unit; the configuration, the
# logrotate file and the logs go to /etc and /var/log whatever the prefix,
# where the unit and logrotate look for them. DESTDIR stages the whole tree
# elsewhere (make deb); only a real install (no DESTDIR) creates the
# balanciaga4 user the unit runs as and hands it its files.
PREFIX ?= /usr/local
DESTDIR ?=
SBINDIR := $(PREFIX)/sbin
MAN8DIR := $(PREFIX)/share/man/man8
SYSCONFDIR := /etc
UNITDIR := $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
LOGDIR := /var/log/balanciaga4
CONFIG_FILE := $(SYSCONFDIR)/balanciaga4/balanciaga4.ron

# The installed binary is the release build. It is a file target, not
# `build`: after `make build`, `sudo make install` finds it newer than the
# sources and runs no cargo as root (which would leave root-owned files in
# target/ and may not find cargo on root's PATH).
$(B4): Cargo.toml Cargo.lock $(shell find src -name '*.rs')
	cargo build --release --bin balanciaga4

install: install-bin install-files

install-bin: $(B4)
	install -D -m 0755 $(B4) $(DESTDIR)$(SBINDIR)/balanciaga4

# Everything but the binary; needs no build (the packaging test runs it).
# An existing configuration is kept: the example goes beside it as .new.
install-files:
	install -d $(DESTDIR)$(MAN8DIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/balanciaga4
	gzip -9n < dist/balanciaga4.8 > $(DESTDIR)$(MAN8DIR)/balanciaga4.8.gz
	chmod 0644 $(DESTDIR)$(MAN8DIR)/balanciaga4.8.gz
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
		dist/balanciaga4.service.in > $(DESTDIR)$(UNITDIR)/balanciaga4.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/balanciaga4.service
	install -D -m 0644 dist/balanciaga4.logrotate $(DESTDIR)$(SYSCONFDIR)/logrotate.d/balanciaga4
	@if [ -e $(DESTDIR)$(CONFIG_FILE) ]; then \
		echo "keeping $(DESTDIR)$(CONFIG_FILE); the example is $(DESTDIR)$(CONFIG_FILE).new"; \
		install -m 0640 dist/balanciaga4.ron $(DESTDIR)$(CONFIG_FILE).new; \
	else \
		echo "install -m 0640 dist/balanciaga4.ron $(DESTDIR)$(CONFIG_FILE)"; \
		install -m 0640 dist/balanciaga4.ron $(DESTDIR)$(CONFIG_FILE); \
	fi
	install -d -m 0750 $(DESTDIR)$(LOGDIR)
	@if [ -z "$(DESTDIR)" ]; then \
		getent group balanciaga4 >/dev/null || groupadd --system balanciaga4 || exit 1; \
		getent passwd balanciaga4 >/dev/null || useradd --system --gid balanciaga4 \
			--no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
			--comment "Balanciaga4 load balancer" balanciaga4 || exit 1; \
		chown root:balanciaga4 $(CONFIG_FILE) && \
		chown balanciaga4:balanciaga4 $(LOGDIR) || exit 1; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
		echo "installed; edit $(CONFIG_FILE), then: systemctl enable --now balanciaga4"; \
	fi

# The configuration and the logs stay, as `apt remove` leaves them; so
# does the balanciaga4 user.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/balanciaga4 $(DESTDIR)$(MAN8DIR)/balanciaga4.8.gz \
		$(DESTDIR)$(UNITDIR)/balanciaga4.service $(DESTDIR)$(SYSCONFDIR)/logrotate.d/balanciaga4
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "left in place: $(DESTDIR)$(CONFIG_FILE), $(DESTDIR)$(LOGDIR) and the balanciaga4 user"

# A binary .deb from the release build, without debhelper: the tree `make
# install` stages, the maintainer scripts and conffiles of dist/debian/,
# and a control file whose Depends come from the libraries the binary
# links (dist/debian/shlibs).
DEB_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DEB_MAINTAINER ?= The Balanciaga4 authors <balanciaga4@localhost>
DEB_STAGE := $(TARGET_DIR)/deb/balanciaga4

deb: $(B4)
	rm -rf $(DEB_STAGE)
	$(MAKE) --no-print-directory install DESTDIR=$(abspath $(DEB_STAGE)) PREFIX=/usr
	strip --strip-unneeded $(DEB_STAGE)/usr/sbin/balanciaga4
	install -d $(DEB_STAGE)/DEBIAN
	install -m 0755 dist/debian/postinst dist/debian/prerm dist/debian/postrm $(DEB_STAGE)/DEBIAN/
	install -m 0644 dist/debian/conffiles $(DEB_STAGE)/DEBIAN/
	install -D -m 0644 LICENSE $(DEB_STAGE)/usr/share/doc/balanciaga4/copyright
	@arch=$$(dpkg --print-architecture) && \
	depends=$$(dist/debian/shlibs $(DEB_STAGE)/usr/sbin/balanciaga4) && \
	size=$$(du -sk --exclude=DEBIAN $(DEB_STAGE) | cut -f1) && \
	sed -e 's|@VERSION@|$(DEB_VERSION)|' -e "s|@ARCH@|$$arch|" -e "s|@SIZE@|$$size|" \
		-e "s|@DEPENDS@|$$depends|" -e 's|@MAINTAINER@|$(DEB_MAINTAINER)|' \
		dist/debian/control.in > $(DEB_STAGE)/DEBIAN/control && \
	deb=$(TARGET_DIR)/balanciaga4_$(DEB_VERSION)_$$arch.deb && \
	dpkg-deb --root-owner-group --build $(DEB_STAGE) $$deb && \
	echo "make deb: $$deb"

# rustfmt and clippy are rustup components that a minimal toolchain may lack.
toolchain:
	@if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then \
		echo "installing the rustfmt and clippy components"; \
		rustup component add rustfmt clippy; \
	fi

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))
