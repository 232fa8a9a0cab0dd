# brisk - build, test, run.  `make run` and `make test` are the two commands a
# newcomer needs; everything else is below them.

CC      ?= cc
SAN     ?=
# Cross build: `make CROSS=aarch64-linux-gnu` (the triplet of a Debian cross compiler;
# `bash scripts/deps.sh cross` installs it and the :arm64 libraries) builds with
# $(CROSS)-gcc into build/$(CROSS), linked against the target's libraries in
# /usr/lib/$(CROSS). CC= on the command line still wins; `make cross` is the short form.
CROSS   ?=
ifneq ($(CROSS),)
ifneq ($(origin CC),command line)
CC      = $(CROSS)-gcc
endif
BUILD   ?= build/$(CROSS)
# the target's .pc files, never the build machine's
PKG_CONFIG ?= $(if $(shell command -v $(CROSS)-pkg-config 2>/dev/null),$(CROSS)-pkg-config,\
              PKG_CONFIG_LIBDIR=/usr/lib/$(CROSS)/pkgconfig:/usr/share/pkgconfig pkg-config)
# runs a target binary here (the man page, tests): qemu-user, e.g. qemu-aarch64-static
EMU     ?= qemu-$(firstword $(subst -, ,$(CROSS)))-static -L /
ifeq ($(SAN),1)
$(error SAN=1 is for native builds only (no sanitizer runtimes for CROSS=$(CROSS)))
endif
ifneq ($(MAKECMDGOALS),clean)
ifneq ($(shell $(PKG_CONFIG) --exists sqlite3 libcrypto libseccomp libdeflate libnghttp2 && echo y),y)
$(error CROSS=$(CROSS): pkg-config finds no target sqlite3, libcrypto, libseccomp, libdeflate or libnghttp2 (/usr/lib/$(CROSS)/pkgconfig); for aarch64-linux-gnu: bash scripts/deps.sh cross)
endif
endif
endif
PKG_CONFIG ?= pkg-config
EMU     ?=
BUILD   ?= build
VERSION := 0.1.0

WARN     = -Wall -Wextra -Werror -Wshadow -Wvla -Wformat=2 -Wimplicit-fallthrough \
           -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith -Wundef
HARDEN   = -fstack-protector-strong -fPIE -D_FORTIFY_SOURCE=2 -fstack-clash-protection
# -g1: line tables for perf, gdb backtraces and sanitizer reports at two thirds of the
# compile time of full -g; `make CFLAGS="-O2 -g"` for variables in gdb.
CFLAGS  ?= -O2 -g1
# libpq's headers only (it is dlopen()ed): arch-independent, so a cross build may use the
# build machine's libpq-dev when the target has no libpq.pc
PQ_CFLAGS := $(shell $(PKG_CONFIG) --cflags libpq 2>/dev/null || echo -I/usr/include/postgresql)
ALL_CFLAGS = -std=gnu11 $(CFLAGS) $(WARN) $(HARDEN) -Isrc $(PQ_CFLAGS) -MMD -MP \
           -DBRISK_VERSION='"$(VERSION)"' -fvisibility=hidden
LDFLAGS_H = -pie -Wl,-z,relro,-z,now,-z,noexecstack
# No -lpq: libpq is dlopen()ed only for a PostgreSQL URL (src/db/pq_load.c).
LIBS     = -lsqlite3 -lssl -lcrypto -lseccomp -ldeflate -lnghttp2 -lpthread

ifeq ($(SAN),1)
BUILD    = build/asan
# FORTIFY and ASan do not mix well; sanitizers catch more anyway.
HARDEN   = -fstack-protector-strong -fPIE -U_FORTIFY_SOURCE
CFLAGS   = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
LDFLAGS_H = -pie -fsanitize=address,undefined -Wl,-z,relro,-z,now,-z,noexecstack
endif

SRC      := $(filter-out src/main.c,$(wildcard src/*/*.c src/*.c))
OBJ      := $(SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/src/main.o
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all run test unit unit-bins deps-run deps-test deps-graph clean format lint fuzz fuzz-bins

all: $(BUILD)/brisk

# `make V=1` shows the full compiler command lines.
Q = $(if $(V),,@)

$(BUILD)/brisk: $(OBJ) $(MAIN_OBJ)
	@$(if $(V),,echo "  LINK   $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS_H) -o $@ $^ $(LIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  CC     $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

# src/app/openapi.c embeds api/openapi.json with .incbin (-MMD does not see it).
$(BUILD)/src/app/openapi.o: api/openapi.json

# test_db_pg.c also calls libpq itself (to set up its databases). A cross build links
# the target's runtime library by its file name: Debian's libpq-dev is not multi-arch.
$(BUILD)/tests/test_db_pg: TEST_LIBS = $(if $(CROSS),-l:libpq.so.5,-lpq)

$(BUILD)/tests/%: tests/unit/%.c $(OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit $(LDFLAGS_H) -o $@ $< $(OBJ) $(LIBS) $(TEST_LIBS)

$(BUILD)/tests/json_check: tests/json_diff/json_check.c $(OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS_H) -o $@ $< $(OBJ) $(LIBS)

unit-bins: $(UNIT_BIN) $(if $(wildcard tests/json_diff/json_check.c),$(BUILD)/tests/json_check)

# What each target does (the comments above them, shorter).
.PHONY: help compdb
help:
	@echo 'make run            build and serve on :8080 with ./data/brisk.db (installs packages as root)'
	@echo 'make test           everything CI runs: gcc + ASan builds, unit, black-box on SQLite and'
	@echo '                    PostgreSQL, deploy, scale-out, fuzz smoke, lint; ends "N passed, N failed"'
	@echo 'make                the binary: $(BUILD)/brisk (V=1 shows commands; CC=clang BUILD=build/clang)'
	@echo 'make unit           unit tests of $(BUILD) (SAN=1: the ASan+UBSan build in build/asan)'
	@echo 'make lint / format  clang-format check, banned calls, cppcheck, clang-tidy / reformat'
	@echo 'make deps-graph     the include graph between src/ folders, checked against docs/design.md'
	@echo 'make fuzz           libFuzzer harnesses (fuzz/), built and run for a while'
	@echo 'make compdb         compile_commands.json for clangd and clang-tidy'
	@echo 'make bench          brisk beside the Go and Rust peers (~15 min; bench-quick: < 3 min)'
	@echo 'make man / install / image   the man page, PREFIX/DESTDIR install, the OCI image (buildah)'
	@echo 'make cross          arm64 build in build/aarch64-linux-gnu (CROSS=triplet for another)'
	@echo 'make clean          remove build/'

# compile_commands.json (for clangd, clang-tidy -p .): every C file we build, with this
# build's compiler and flags (handed over in the environment: they contain quotes).
compdb: export BRISK_COMPDB_FLAGS = $(ALL_CFLAGS)
compdb:
	@python3 -c 'import json, os, sys; cc, flags = sys.argv[1], os.environ["BRISK_COMPDB_FLAGS"]; \
	  cmd = lambda f: "%s %s%s -c %s" % (cc, flags, " -Itests/unit" if f.startswith("tests/unit/") else "", f); \
	  json.dump([{"directory": os.getcwd(), "file": f, "command": cmd(f)} for f in sys.argv[2:]], \
	            open("compile_commands.json", "w"), indent=1)' '$(CC)' $(SRC) src/main.c $(UNIT_SRC)
	@echo "  GEN    compile_commands.json"

# Build and start the service on :8080 with ./data/brisk.db.
run: deps-run
	@$(MAKE) --no-print-directory all
	@mkdir -p data
	exec ./$(BUILD)/brisk serve

# A self-signed ECDSA P-256 pair for local TLS (localhost, 127.0.0.1, ::1; 30 days) in
# data/tls/, which git ignores. Kept when it exists: `rm -r data/tls` for a new one.
TLS_DEV_DIR = data/tls
.PHONY: tls-dev-cert
tls-dev-cert: $(TLS_DEV_DIR)/cert.pem
$(TLS_DEV_DIR)/cert.pem:
	@mkdir -p $(TLS_DEV_DIR)
	@umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	    -days 30 -subj /CN=localhost \
	    -addext subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1 \
	    -keyout $(TLS_DEV_DIR)/key.pem -out $@ 2>/dev/null
	@echo "wrote $(TLS_DEV_DIR)/cert.pem and $(TLS_DEV_DIR)/key.pem; serve TLS on :8443 with:"
	@echo "  BRISK_TLS_CERT=$(TLS_DEV_DIR)/cert.pem BRISK_TLS_KEY=$(TLS_DEV_DIR)/key.pem \\"
	@echo "  BRISK_TLS_ADDR=0.0.0.0:8443 ./$(BUILD)/brisk serve"

# Everything: normal build and ASan+UBSan build, unit + black-box tests.
test: deps-test
	@bash tests/run_all.sh

unit: $(UNIT_BIN)
	@bash tests/run_all.sh --unit-only --build $(BUILD)

# The include graph between src/ folders and the module-call cycles, checked
# against the layer rule of docs/design.md (also part of `make test`).
deps-graph: all
	@python3 scripts/deps_graph.py --check --build $(BUILD)

deps-run:
	@bash scripts/deps.sh run

deps-test:
	@bash scripts/deps.sh test

# arm64: the cross toolchain and :arm64 libraries, then the binary and the unit tests in
# build/aarch64-linux-gnu (tests/deploy/test_arm64.py runs them under qemu-aarch64-static).
CROSS_DEFAULT = aarch64-linux-gnu
.PHONY: deps-cross cross
deps-cross:
	@bash scripts/deps.sh cross

cross: deps-cross
	@$(MAKE) --no-print-directory CROSS=$(or $(CROSS),$(CROSS_DEFAULT)) all unit-bins

# libFuzzer harnesses (clang): fuzz/fuzz_NAME.c, seeds in fuzz/corpus/NAME/, dictionary
# fuzz/NAME.dict, saved crashers in fuzz/regression/NAME/.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BIN     := $(patsubst fuzz/%.c,build/fuzz/%,$(wildcard fuzz/fuzz_*.c))
FUZZ_CFLAGS  = -std=gnu11 -g -O1 -fno-omit-frame-pointer -Isrc $(PQ_CFLAGS) -DBRISK_VERSION='"fuzz"' \
               -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all

build/fuzz/%: fuzz/%.c $(SRC) $(wildcard src/*/*.h src/*.h)
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  FUZZ   $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(SRC) $(LIBS)

fuzz-bins: $(FUZZ_BIN)

fuzz: deps-test fuzz-bins
	@bash tests/fuzz_run.sh --seconds $(FUZZ_SECONDS)

format:
	clang-format -i $$(find src tests fuzz -name '*.[ch]')

lint:
	@bash scripts/lint.sh

# Benchmarks: brisk beside idiomatic Go (gin, net/http) and Rust (hyper) peers, on
# this machine, in one run (bench/run.sh; results in bench/results/). Installs what it
# needs as root. `bench` takes about 15 minutes; `bench-quick` under 3 once built.
.PHONY: bench bench-quick
bench:
	@bash bench/run.sh

bench-quick:
	@bash bench/run.sh --quick

# Deploying (packaging/, tests/deploy/): the man page from the settings table
# (`brisk help-man`), `make install` (PREFIX, DESTDIR; the systemd unit goes to
# $(PREFIX)/lib/systemd/system, which systemd searches for /usr/local and /usr) and
# `make image`: an OCI image FROM scratch with buildah (packaging/image.sh).
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
IMAGE   ?= localhost/brisk:$(VERSION)
.PHONY: man install image

man: $(BUILD)/brisk.1

$(BUILD)/brisk.1: $(BUILD)/brisk
	$(Q)$(EMU) ./$(BUILD)/brisk help-man > $@.tmp && mv $@.tmp $@

# The example environment file is installed once, never over an edited one.
install: $(BUILD)/brisk $(BUILD)/brisk.1
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR)
	install -m 0755 $(BUILD)/brisk $(DESTDIR)$(BINDIR)/brisk
	install -m 0644 $(BUILD)/brisk.1 $(DESTDIR)$(MANDIR)/man1/brisk.1
	sed 's|/usr/local/bin/brisk|$(BINDIR)/brisk|' packaging/brisk.service > $(BUILD)/brisk.service
	install -m 0644 $(BUILD)/brisk.service $(DESTDIR)$(UNITDIR)/brisk.service
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/brisk
	test -e $(DESTDIR)$(SYSCONFDIR)/brisk/brisk.env || \
	    install -m 0600 packaging/brisk.env $(DESTDIR)$(SYSCONFDIR)/brisk/brisk.env

image: $(BUILD)/brisk
	@bash packaging/image.sh --binary $(BUILD)/brisk --tag $(IMAGE)

clean:
	rm -rf build

-include $(OBJ:.o=.d) $(MAIN_OBJ:.o=.d)
