# TinyMLPerf: one build for the engine, the events, the daemon, the tests and the bench.
#
#   make            build everything into build/          make check   all tests (+ ASan/UBSan)
#   make run        build and start tinymlperfd           make bench   performance targets
#   make deps       install the Debian packages needed    make asan    sanitizer build in build-asan/
#   make install    PREFIX=/usr/local DESTDIR=            make clean
#
# Project flags are kept apart from the user's CFLAGS/LDFLAGS (FINAL_CFLAGS), SIMD files get
# their -m flags per object, and nothing ships with -march=native: kernels are chosen at run time.

PREFIX ?= /usr/local
BINDIR = $(PREFIX)/bin
SHAREDIR = $(PREFIX)/share/tinymlperf
BUILD ?= build
CFLAGS ?= -O2 -g
LDFLAGS ?=
SANITIZE ?= 0

VERSION := $(shell sed -n 's/^#define TM_ENGINE_VERSION "\(.*\)"/\1/p' engine/engine.h)
GIT_REV := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

PKGS := libmicrohttpd libuv sqlite3 libcjson zlib libseccomp
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)
BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS := $(shell pkg-config --libs openblas 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror
FINAL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -MMD -MP -pthread \
	-Iengine -Ievents -Iserver $(PKG_CFLAGS) \
	-DTM_SHAREDIR='"$(SHAREDIR)"' $(CFLAGS)
FINAL_LDFLAGS := -pthread $(LDFLAGS)
FINAL_LIBS := $(PKG_LIBS) -lm

ifeq ($(SANITIZE),1)
FINAL_CFLAGS += -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FINAL_LDFLAGS += -fsanitize=address,undefined
endif

# SIMD objects get their instruction-set flags here and nowhere else.
SIMD_AVX2 := -mavx2 -mfma -mf16c
SIMD_AVX512 := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c

# ---- objects ----

ENGINE_OBJS += engine/util.o
ENGINE_OBJS += engine/version.o
ENGINE_OBJS += engine/cpu.o
ENGINE_OBJS += engine/pool.o
ENGINE_OBJS += engine/gemm.o
ENGINE_OBJS += engine/gemm_avx2.o
ENGINE_OBJS += engine/gemm_avx512.o
ENGINE_OBJS += engine/sparse.o
ENGINE_OBJS += engine/sparse_avx512.o
ENGINE_OBJS += engine/sparse_avx2.o
ENGINE_OBJS += engine/qgemm.o
ENGINE_OBJS += engine/qgemm_avx2.o
ENGINE_OBJS += engine/qgemm_avx512.o
ENGINE_OBJS += engine/optim.o
ENGINE_OBJS += engine/ops.o
ENGINE_OBJS += engine/ops_avx2.o
ENGINE_OBJS += engine/ops_avx512.o
ENGINE_OBJS += engine/idx.o
ENGINE_OBJS += engine/decathlon.o
ENGINE_OBJS += engine/safetensors.o
ENGINE_OBJS += engine/model.o
ENGINE_OBJS += engine/transformer.o
ENGINE_OBJS += engine/train.o
ENGINE_OBJS += engine/prof.o
ENGINE_OBJS += engine/infer.o
ENGINE_OBJS += engine/tf_infer.o

EVENTS_OBJS += events/stats.o
EVENTS_OBJS += events/event.o
EVENTS_OBJS += events/config.o
EVENTS_OBJS += events/harness.o
EVENTS_OBJS += events/run.o
EVENTS_OBJS += events/sandbox.o

SERVER_OBJS += server/opts.o
SERVER_OBJS += server/log.o
SERVER_OBJS += server/db.o
SERVER_OBJS += server/schema.o
SERVER_OBJS += server/http.o
SERVER_OBJS += server/api.o
SERVER_OBJS += server/sha256.o
SERVER_OBJS += server/sched.o
SERVER_OBJS += server/web.o

TEST_OBJS += tests/main.o
TEST_OBJS += tests/util.o
TEST_OBJS += tests/engine/test_util.o
TEST_OBJS += tests/engine/test_gemm.o
TEST_OBJS += tests/engine/test_sparse.o
TEST_OBJS += tests/engine/test_qgemm.o
TEST_OBJS += tests/engine/test_ops.o
TEST_OBJS += tests/engine/test_idx.o
TEST_OBJS += tests/engine/test_decathlon.o
TEST_OBJS += tests/engine/test_safetensors.o
TEST_OBJS += tests/engine/test_model.o
TEST_OBJS += tests/engine/test_train.o
TEST_OBJS += tests/engine/test_transformer.o
TEST_OBJS += tests/engine/test_infer.o
TEST_OBJS += tests/engine/test_tf_infer.o
TEST_OBJS += tests/events/test_stats.o
TEST_OBJS += tests/events/test_config.o
TEST_OBJS += tests/events/test_harness.o
TEST_OBJS += tests/events/test_run.o
TEST_OBJS += tests/events/test_sandbox.o
TEST_OBJS += tests/server/test_opts.o
TEST_OBJS += tests/server/test_db.o
TEST_OBJS += tests/server/test_sha256.o
TEST_OBJS += tests/integration/test_health.o
TEST_OBJS += tests/integration/test_teams.o
TEST_OBJS += tests/integration/test_api.o
TEST_OBJS += tests/integration/test_submissions.o
TEST_OBJS += tests/integration/test_leaderboard.o
TEST_OBJS += tests/integration/test_sched.o
TEST_OBJS += tests/integration/test_faults.o
TEST_OBJS += tests/integration/test_pages.o
TEST_OBJS += tests/integration/test_browser.o

BENCH_OBJS += bench/bench.o
BENCH_OBJS += bench/bench_gemm.o
BENCH_OBJS += bench/bench_int8.o
BENCH_OBJS += bench/bench_sparse.o
BENCH_OBJS += bench/bench_quality.o
BENCH_OBJS += bench/bench_kv.o
BENCH_OBJS += bench/bench_http.o

$(BUILD)/engine/version.o: FINAL_CFLAGS += -DTM_GIT_REV='"$(GIT_REV)"'
$(BUILD)/engine/version.o: .FORCE

# Per-object SIMD flags (target-specific variables, prefixed with the build directory).
$(BUILD)/engine/gemm_avx2.o: SIMD_FLAGS = $(SIMD_AVX2)
$(BUILD)/engine/gemm_avx512.o: SIMD_FLAGS = $(SIMD_AVX512)
$(BUILD)/engine/qgemm_avx2.o: SIMD_FLAGS = $(SIMD_AVX2)
$(BUILD)/engine/qgemm_avx512.o: SIMD_FLAGS = $(SIMD_AVX512)
$(BUILD)/engine/sparse_avx512.o: SIMD_FLAGS = $(SIMD_AVX512)
$(BUILD)/engine/sparse_avx2.o: SIMD_FLAGS = $(SIMD_AVX2)
$(BUILD)/engine/ops_avx2.o: SIMD_FLAGS = $(SIMD_AVX2)
$(BUILD)/engine/ops_avx512.o: SIMD_FLAGS = $(SIMD_AVX512)

# ---- products ----

LIB := $(BUILD)/libtinymlperf.a
DAEMON := $(BUILD)/tinymlperfd
RUNNER := $(BUILD)/tinymlperf-run
TESTS := $(BUILD)/tm-tests
FAKE_WORKER := $(BUILD)/tm-fake-worker
BENCH := $(BUILD)/tm-bench

B = $(addprefix $(BUILD)/,$(1))

.FORCE:
.PHONY: .FORCE all run check tests bench deps deps-bench asan install uninstall clean references
.DEFAULT_GOAL := all

all: $(DAEMON) $(RUNNER)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(FINAL_CFLAGS) $(SIMD_FLAGS) -c -o $@ $<

# schema.sql is embedded in the daemon so an installed binary cannot run with a stale copy.
$(BUILD)/server/schema.o: server/schema.S schema.sql
	@mkdir -p $(dir $@)
	$(CC) -c -o $@ -DSCHEMA_PATH='"schema.sql"' $<

$(LIB): $(call B,$(ENGINE_OBJS) $(EVENTS_OBJS))
	@rm -f $@
	$(AR) rcs $@ $^

$(DAEMON): $(BUILD)/server/main.o $(call B,$(SERVER_OBJS)) $(LIB)
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(FINAL_LIBS)

$(RUNNER): $(BUILD)/events/run_main.o $(LIB)
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(FINAL_LIBS)

$(call B,$(TEST_OBJS)): FINAL_CFLAGS += $(CHECK_CFLAGS) -Itests
$(TESTS): $(call B,$(TEST_OBJS)) $(call B,$(SERVER_OBJS)) $(LIB) | $(DAEMON) $(RUNNER) $(FAKE_WORKER)
	$(CC) $(FINAL_LDFLAGS) -o $@ $(filter %.o %.a,$^) $(CHECK_LIBS) $(FINAL_LIBS)

# A worker that misbehaves on request, for the daemon's fault tests.
$(FAKE_WORKER): $(BUILD)/tests/fake_worker.o
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(FINAL_LIBS)

tests: $(TESTS)

$(call B,$(BENCH_OBJS)): FINAL_CFLAGS += $(BLAS_CFLAGS)
$(BENCH): $(call B,$(BENCH_OBJS)) $(LIB)
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(BLAS_LIBS) $(FINAL_LIBS)

# ---- the two commands ----

# Sub-makes of run, check and bench build with one job per core; a -j given to make itself
# is kept (it is in MAKEFLAGS when the recipe runs).
JOBS = $(if $(filter -j%,$(MAKEFLAGS)),,-j$(shell nproc 2>/dev/null || echo 1))

run:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory $(JOBS) all
	@mkdir -p var
	@# Job control gives the daemon the terminal's foreground process group, so Ctrl-C reaches
	@# only the daemon, which stops cleanly and exits 0, and make exits with its status.
	bash -c 'set -m; ./$(DAEMON) --listen 127.0.0.1:8080 --data-dir ./var; status=$$?; exit $$status'

# The unit and integration suites, then the same suites built with ASan and UBSan.  Both
# builds use every core unless make was given -j (JOBS below).
check:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory $(JOBS) tests
	@$(MAKE) --no-print-directory $(JOBS) asan
	TM_BUILD_DIR=$(BUILD) ./$(TESTS)
	TM_BUILD_DIR=build-asan ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ./build-asan/tm-tests

asan:
	@$(MAKE) --no-print-directory BUILD=build-asan SANITIZE=1 build-asan/tm-tests

bench:
	@$(MAKE) --no-print-directory deps deps-bench
	@$(MAKE) --no-print-directory $(JOBS) $(BENCH) all
	./$(BENCH) --json $(BUILD)/bench.json

# The three reference models, trained from the real data into DATA_DIR/models (what a first
# start of the daemon would otherwise do in the background; the Docker image runs it at build
# time so a container starts ready).  Existing files are kept.
DATA_DIR ?= ./var
references: $(RUNNER)
	@for ev in mlp_sprint cnn_marathon transformer_decathlon; do \
		if [ -f "$(DATA_DIR)/models/$$ev.safetensors" ]; then \
			echo "references: $$ev exists"; \
		else \
			./$(RUNNER) train $$ev --data-dir "$(DATA_DIR)" || exit 1; \
		fi; \
	done

# ---- dependencies (Debian 12) ----

DEB_PKGS := build-essential pkg-config libmicrohttpd-dev libsqlite3-dev libcjson-dev \
	libuv1-dev check zlib1g-dev libseccomp-dev dataset-fashion-mnist curl chromium
DEB_BENCH_PKGS := libopenblas-dev wrk

define apt_install_missing
	@missing=""; for p in $(1); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' \
			|| missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call apt_install_missing,$(DEB_PKGS))

deps-bench:
	$(call apt_install_missing,$(DEB_BENCH_PKGS))

# ---- install ----

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SHAREDIR)
	install -m 755 $(DAEMON) $(RUNNER) $(DESTDIR)$(BINDIR)/
	install -m 644 schema.sql $(DESTDIR)$(SHAREDIR)/
	cp -R web $(DESTDIR)$(SHAREDIR)/
	if [ -d examples ]; then cp -R examples $(DESTDIR)$(SHAREDIR)/; fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/tinymlperfd $(DESTDIR)$(BINDIR)/tinymlperf-run
	rm -rf $(DESTDIR)$(SHAREDIR)

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
