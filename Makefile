# Thin wrapper over CMake. `make demo` and `make check` work on a fresh
# Debian machine: missing packages are installed when run as root, else the
# exact apt-get command is printed.

BUILD    ?= build
JOBS     ?= $(shell nproc)
CMAKE_ARGS ?=
DEPS     := cmake make gcc pkg-config libxxhash-dev liburing-dev

.PHONY: all deps build demo check check-no-uring check-asan check-tsan check-all fuzz crash bench-core clean

all: build

deps:
	@missing=""; for p in $(DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "armdb needs these Debian packages; run:"; \
	    echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS) >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

demo: build
	rm -rf demo-data
	./$(BUILD)/demo demo-data

check: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

# The same suite with io_uring turned off: the pread fallback must pass it too.
check-no-uring: build
	ARMDB_NO_URING=1 ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

# The C suite under AddressSanitizer + UndefinedBehaviorSanitizer.
check-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DARMDB_SANITIZE=address,undefined $(CMAKE_ARGS) >/dev/null
	cmake --build build-asan -j$(JOBS)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --test-dir build-asan --output-on-failure -j$(JOBS)

# The concurrency tests (label "threads") under ThreadSanitizer.
check-tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DARMDB_SANITIZE=thread $(CMAKE_ARGS) >/dev/null
	cmake --build build-tsan -j$(JOBS)
	TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan -L threads --output-on-failure -j$(JOBS)

# libFuzzer targets (clang) for the data-file scanner, the hint parser and
# the meta parser, each run FUZZ_SECONDS from the seeds in spec/fuzz/corpus
# plus every input kept in spec/fuzz/regress (inputs that once crashed).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := scan hint meta
fuzz:
	@$(MAKE) --no-print-directory deps DEPS="$(DEPS) clang libclang-rt-dev"
	cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DARMDB_FUZZ=ON -DARMDB_TESTS=OFF \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS) >/dev/null
	cmake --build build-fuzz -j$(JOBS) --target $(addprefix fuzz_,$(FUZZ_TARGETS))
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p build-fuzz/corpus/$$t spec/fuzz/regress/$$t; \
	  cp spec/fuzz/corpus/$$t/* build-fuzz/corpus/$$t/; \
	  echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  ./build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 \
	    -artifact_prefix=build-fuzz/crash-$$t- build-fuzz/corpus/$$t spec/fuzz/regress/$$t 2>build-fuzz/fuzz_$$t.log \
	    || { tail -40 build-fuzz/fuzz_$$t.log; echo "fuzz_$$t failed: the input is in build-fuzz/crash-$$t-*"; exit 1; }; \
	  grep -E '^Done [0-9]+ runs' build-fuzz/fuzz_$$t.log | tail -1; \
	done

# The kill -9 crash test, run much longer than in `make check`.
crash: build
	ARMDB_CRASH_ROUNDS=$${ARMDB_CRASH_ROUNDS:-5000} ./$(BUILD)/crash_kill

# The core benchmark: armdb against LMDB and LevelDB, one thread, 1M keys
# (BENCH_KEYS, BENCH_REPS, BENCH_SYNC_KEYS, BENCH_COLD_KEYS, TMPDIR: see
# bench/README.md). Prints a table; the figures go to bench/results/.
# liburing and libsodium are linked only where installed and only if the
# static library uses them.
bench-core: build
	@$(MAKE) --no-print-directory deps DEPS="$(DEPS) liblmdb-dev libleveldb-dev"
	$(CC) -O2 -g -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Isrc \
	  bench/core.c $(BUILD)/libarmdb.a -llmdb -lleveldb -Wl,--as-needed \
	  $$(pkg-config --libs liburing 2>/dev/null) $$(pkg-config --libs libsodium 2>/dev/null) \
	  -lxxhash -lpthread -o $(BUILD)/bench-core
	$(BUILD)/bench-core bench/results/core-$$(date +%Y-%m-%d).json

# What CI runs: warnings as errors, both I/O paths, both sanitizer builds,
# and the fuzzers.
check-all:
	$(MAKE) check CMAKE_ARGS=-DARMDB_WERROR=ON
	$(MAKE) check-no-uring CMAKE_ARGS=-DARMDB_WERROR=ON
	$(MAKE) check-asan CMAKE_ARGS=-DARMDB_WERROR=ON
	$(MAKE) check-tsan CMAKE_ARGS=-DARMDB_WERROR=ON
	$(MAKE) fuzz CMAKE_ARGS=-DARMDB_WERROR=ON

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz demo-data
