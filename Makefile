# cti-server build.
#
#   make            build ./cti-server (optimized, asserts on) and the tools
#   make run        install missing Debian packages (as root), build the server and
#                   cti-sim, serve on SQLite (var/)
#   make demo-connect  the same with the fake Dialpad: connect an app (OAuth), take its
#                   calls, disconnect
#   make demo       build, start a server on a temporary SQLite, create an app, play
#                   cti-sim's demo calls, print what to curl, stop the server
#   make test       install what tests need, build with ASan+UBSan, run every test
#                   (unit, fuzz reproducers replayed, store suite, black-box, JS client,
#                   dashboard in a browser)
#   make test-js    the JavaScript client (clients/js) against the real server
#   make test-browser  the dashboard (GET /dashboard) in chromium against the real server
#   make lint-openapi  lint docs/openapi.yaml with the pinned Redocly CLI (tools/openapi)
#   make bench      build optimized, run the benchmarks, print figures
#   make bench-tenants / bench-instances   1 vs 1,000 apps; 1-3 servers on one PostgreSQL
#   make drills     failure drills on the optimized build (kill -9 soak, PostgreSQL away,
#                   disk full, slow clients, poison events, ...; ~11 min, loopback only;
#                   DRILLS="--only killsoak --backend sqlite --quick"); docs/RELIABILITY.md
#   make fuzz       libFuzzer targets (JWT decoder, event normalizer, WebSocket frame
#                   reader, ingest JSON reader, phone numbers, .env/config, Dialpad
#                   answers, WebSocket client messages, HTTP request path);
#                   FUZZ_SECONDS=60 each
#   make format     format the tree with .clang-format
#   make clean
#
# Two build flavours share the sources: build/release (-O2) and build/asan
# (-O1, AddressSanitizer + UndefinedBehaviorSanitizer), each with its own objects.

PKGS     := libmicrohttpd jansson libjwt libcrypt openssl sqlite3 libpq libcurl liburing
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS)) -lpthread -lm

WARN     := -Wall -Wextra -Wpedantic -Werror -Wshadow -Wstrict-prototypes \
            -Wmissing-prototypes -Wformat=2 -Wno-unused-parameter
CSTD     := -std=c11 -D_GNU_SOURCE
INC      := -Isrc
CFLAGS_release := -O2 -g
CFLAGS_asan    := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                  -fno-sanitize-recover=undefined
LDFLAGS_asan   := -fsanitize=address,undefined
# The optimized server allocates with tcmalloc (google-perftools' minimal
# allocator; Debian's libgoogle-perftools-dev): its per-thread caches measured
# 7-11% more webhooks/s than glibc's malloc on SQLite, the HTTP threads and the
# ingest worker handing buffers to each other, for ~7 MiB more RSS
# (docs/PERFORMANCE.md); `make ALLOC_release=` links glibc's malloc instead.
# The ASan build keeps the sanitizer's allocator; the tools keep glibc's.
ALLOC_release = $(shell pkg-config --libs libtcmalloc_minimal 2>/dev/null || echo -ltcmalloc_minimal)

SRC      := $(shell find src -name '*.c' ! -name main.c | sort)
UNIT     := $(sort $(wildcard tests/unit/test_*.c))

.PHONY: all run demo demo-connect test lint-openapi test-unit test-fuzz-replay test-store test-blackbox test-js test-browser bench bench-scale bench-tenants bench-instances drills fuzz format \
        clean deps-build deps-run deps-test
.DEFAULT_GOAL := all

TOOLS := build/release/tools/loadgen build/release/tools/wsbench build/release/tools/cti-sim \
         build/release/tools/seed

all: cti-server $(TOOLS)

# ---- objects, per flavour ---------------------------------------------------
define flavour
build/$(1)/%.o: %.c
	@mkdir -p $$(@D)
	@echo "  CC [$(1)] $$<"
	@$$(CC) $(CSTD) $(WARN) $$(CFLAGS_$(1)) $(INC) $$(PKG_CFLAGS) -MMD -MP -c $$< -o $$@

build/$(1)/libcti.a: $$(SRC:%.c=build/$(1)/%.o)
	@rm -f $$@
	$$(AR) rcs $$@ $$^

build/$(1)/cti-server: build/$(1)/src/main.o build/$(1)/libcti.a
	$$(CC) $$(LDFLAGS_$(1)) -o $$@ $$^ $$(PKG_LIBS) $$(ALLOC_$(1))
endef
$(eval $(call flavour,release))
$(eval $(call flavour,asan))

# The dashboard's files (web/dashboard/ and the JavaScript client, served as
# /dashboard/client.js) are compiled into the binary: tools/embed.sh writes
# them as byte arrays into a header that src/api/dashboard.c includes.
DASHBOARD_ASSETS := index.html=web/dashboard/index.html dashboard.css=web/dashboard/dashboard.css \
                    dashboard.js=web/dashboard/dashboard.js client.js=clients/js/index.js
build/gen/dashboard_assets.h: tools/embed.sh $(foreach a,$(DASHBOARD_ASSETS),$(word 2,$(subst =, ,$(a))))
	@mkdir -p $(@D)
	@echo "  GEN $@"
	@tools/embed.sh $@ $(DASHBOARD_ASSETS)
build/release/src/api/dashboard.o build/asan/src/api/dashboard.o: build/gen/dashboard_assets.h
build/release/src/api/dashboard.o: CFLAGS_release += -Ibuild/gen
build/asan/src/api/dashboard.o: CFLAGS_asan += -Ibuild/gen

cti-server: build/release/cti-server
	cp $< $@.tmp && mv -f $@.tmp $@

build/release/tools/%: build/release/tools/%.o build/release/libcti.a
	$(CC) -o $@ $^ $(PKG_LIBS)

# ---- tests -------------------------------------------------------------------
UNIT_BINS := $(UNIT:tests/unit/%.c=build/asan/tests/unit/%)
build/asan/tests/unit/%: build/asan/tests/unit/%.o build/asan/libcti.a
	$(CC) $(LDFLAGS_asan) -o $@ $^ $(PKG_LIBS) -lcmocka

# The store conformance suite: one binary per file, sharing harness.c.
STORE_BINS := $(patsubst tests/store/%.c,build/asan/tests/store/%,$(sort $(wildcard tests/store/test_*.c)))
build/asan/tests/store/test_%: build/asan/tests/store/test_%.o build/asan/tests/store/harness.o \
                               build/asan/libcti.a
	$(CC) $(LDFLAGS_asan) -o $@ $^ $(PKG_LIBS) -lcmocka

# Each libFuzzer target with a plain main() (tests/fuzz/replay.c) in the ASan
# build, gcc being enough: tests/fuzz/replay.sh runs each saved reproducer in
# tests/fuzz/crashes/ through its target (by name: event-, jwt-, jscan-, wsframe-,
# phone-, config-, dpclient-, wsproto-, http-).
FUZZ_REPLAY := $(patsubst tests/fuzz/%.c,build/asan/tests/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
$(FUZZ_REPLAY): build/asan/tests/fuzz/%: build/asan/tests/fuzz/%.o build/asan/tests/fuzz/replay.o \
                build/asan/libcti.a
	$(CC) $(LDFLAGS_asan) -o $@ $^ $(PKG_LIBS)

deps-build:
	@tools/deps.sh build
deps-run:
	@tools/deps.sh run
deps-test:
	@tools/deps.sh test

# Builds what the README's walkthrough uses next (cti-sim), then serves.
run: deps-run
	@$(MAKE) --no-print-directory cti-server build/release/tools/cti-sim
	./cti-server

demo-connect: deps-run
	@$(MAKE) --no-print-directory cti-server
	@tools/demo-connect.sh

demo: deps-run
	@$(MAKE) --no-print-directory cti-server build/release/tools/cti-sim
	@tools/demo.sh

test: deps-test
	@$(MAKE) --no-print-directory lint-openapi test-unit test-fuzz-replay test-store test-blackbox test-js test-browser

test-unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

.SECONDARY: $(STORE_BINS:%=%.o) build/asan/tests/store/harness.o

test-store: $(STORE_BINS)
	@tests/run-store-tests.sh $^

test-fuzz-replay: $(FUZZ_REPLAY)
	@tests/fuzz/replay.sh build/asan/tests/fuzz

# npm installs the standardwebhooks library (tests/blackbox/verifier, from its lock file):
# test_outbound.py verifies the outbound webhooks' signatures with it.
test-blackbox: build/asan/cti-server cti-server $(TOOLS)
	@tools/deps.sh js
	@npm ci --prefix tests/blackbox/verifier --silent --no-audit --no-fund
	CTI_SERVER_BIN=$(CURDIR)/build/asan/cti-server CTI_SERVER_RELEASE_BIN=$(CURDIR)/cti-server \
	  /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/blackbox tests/fakedialpad

# The JavaScript client (clients/js) against the real ASan server, with Node's
# own test runner; npm installs its one devDependency (ws) from the lock file.
test-js: build/asan/cti-server
	@tools/deps.sh js
	@npm ci --prefix clients/js --silent --no-audit --no-fund
	CTI_SERVER_BIN=$(CURDIR)/build/asan/cti-server node --test clients/js/test/

# The dashboard in Debian's chromium, driven by playwright-core (tests/browser's
# one devDependency, from its lock file), against the real ASan server.
test-browser: build/asan/cti-server
	@tools/deps.sh browser
	@npm ci --prefix tests/browser --silent --no-audit --no-fund
	CTI_SERVER_BIN=$(CURDIR)/build/asan/cti-server node --test tests/browser/test/

# The OpenAPI description (docs/openapi.yaml) with Redocly CLI, pinned in
# tools/openapi/package-lock.json; the black-box tests also validate every response
# they receive against it (tests/blackbox/openapi_check.py).
lint-openapi:
	@tools/deps.sh js
	@npm ci --prefix tools/openapi --silent --no-audit --no-fund
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
	  tools/openapi/node_modules/.bin/redocly lint --config tools/openapi/redocly.yaml docs/openapi.yaml

bench:
	@tools/deps.sh bench
	@$(MAKE) --no-print-directory cti-server $(TOOLS)
	/usr/bin/python3 tools/bench.py

# Growth (not part of `make bench`; up to ~30 minutes): tools/seed.c bulk-loads
# realistic call legs through the real store and processor code, tools/bench_scale.py
# measures every read path at each size on both backends (docs/PERFORMANCE.md, Growth).
bench-scale:
	@tools/deps.sh bench
	@$(MAKE) --no-print-directory cti-server build/release/tools/seed
	/usr/bin/python3 tools/bench_scale.py $(SCALE)

# Tenants and instances (not part of `make bench`; each ~10 minutes): tools/bench_fleet.py.
# bench-tenants: 1 / 100 / 1,000 apps on one server, both backends (ingest, WebSocket
# latency with sockets spread over the apps, RSS per idle app); bench-instances: 1, 2, 3
# servers on one PostgreSQL (ingest through all, latency across them, where the CPU goes).
# FLEET="--quick" or e.g. FLEET="--apps 1,1000 --backends sqlite" (docs/PERFORMANCE.md).
bench-tenants:
	@tools/deps.sh bench
	@$(MAKE) --no-print-directory cti-server build/release/tools/loadgen build/release/tools/wsbench
	/usr/bin/python3 tools/bench_fleet.py tenants $(FLEET)

bench-instances:
	@tools/deps.sh bench
	@$(MAKE) --no-print-directory cti-server build/release/tools/loadgen build/release/tools/wsbench
	/usr/bin/python3 tools/bench_fleet.py instances $(FLEET)

# Failure drills (not part of `make test`): tests/drills/run.py, one line per drill.
drills:
	@tools/deps.sh bench
	@$(MAKE) --no-print-directory cti-server build/release/tools/loadgen
	/usr/bin/python3 tests/drills/run.py $(DRILLS)

fuzz:
	@tools/deps.sh fuzz
	bash tests/fuzz/run.sh

format:
	clang-format -i $$(find src tests tools -name '*.[ch]')

clean:
	rm -rf build cti-server

-include $(shell find build -name '*.d' 2>/dev/null)
