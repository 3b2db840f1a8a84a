# Thin wrapper over CMake. `make demo` and `make check` work on a fresh
# Debian machine: missing packages are installed when run as root, else the
# exact apt-get command is printed.

BUILD    ?= build
JOBS     ?= $(shell nproc)
CMAKE_ARGS ?=
# The library and the Lua runtime (luajit2 is OpenResty's LuaJIT: Debian's
# nginx Lua module needs it, and it replaces the plain luajit package).
DEPS     := cmake make gcc pkg-config libxxhash-dev liburing-dev libsodium-dev luajit2 lua-cjson
# What the tests need besides: busted, luacheck, luarocks and LuaJIT's
# headers for the rock, nginx with the Lua module and luasocket (its load
# client) for the OpenResty spec.
CHECK_DEPS := $(DEPS) libluajit2-5.1-dev lua-busted lua-check luarocks nginx libnginx-mod-http-lua curl lua-socket

.PHONY: all deps check-deps build demo check check-lua examples lint rock check-no-uring check-asan check-tsan \
	check-all fuzz crash bench bench-core bench-lua bench-feed bench-compact bench-repl bench-ordered-index bench-encrypt \
	bench-http clean

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

check-deps:
	@$(MAKE) --no-print-directory deps DEPS="$(CHECK_DEPS)"

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS) >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

# The main job: a million session records through a typed collection.
demo: build
	luajit examples/quickstart.lua demo-data

# Everything: the C programs, the Lua specs, luacheck, and the rock.
check: build check-deps
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)
	@$(MAKE) --no-print-directory check-lua examples lint rock

# The busted specs (spec/NN-*_spec.lua) under LuaJIT, against the build tree.
check-lua: build
	ARMDB_LIB=$(CURDIR)/$(BUILD)/libarmdb.so busted

# examples/import_events.lua and examples/backup_nightly.lua on a scratch
# database under the build dir, their output checked (examples/check.sh).
# The OpenResty example runs in spec/07-openresty_spec.lua.
examples: build
	ARMDB_LIB=$(CURDIR)/$(BUILD)/libarmdb.so LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;" \
	  examples/check.sh $(BUILD)/examples

lint:
	luacheck -q lua spec examples examples/openresty/serve bench

# `luarocks make` into a scratch tree, offline, then a fresh luajit with
# only that tree's paths loads armdb and round-trips a value.
ROCK_TREE ?= $(BUILD)/rock-tree
rock: build
	rm -rf $(ROCK_TREE) build.luarocks
	luarocks --lua-version 5.1 make rocks/armdb-scm-1.rockspec --tree $(ROCK_TREE) >$(BUILD)/rock.log 2>&1 \
	  || { cat $(BUILD)/rock.log; exit 1; }
	rm -rf build.luarocks
	tree=$(CURDIR)/$(ROCK_TREE); cd /tmp && env -u ARMDB_LIB LUA_PATH="$$tree/share/lua/5.1/?.lua;;" \
	  LUA_CPATH="$$tree/lib/lua/5.1/?.so;;" luajit $(CURDIR)/rocks/smoke.lua $$tree
	$(ROCK_TREE)/bin/armdb --help >/dev/null

# The randomized suites run lighter in the second and the sanitizer passes
# (they prove other paths than the first pass's full rounds).
LIGHT := ARMDB_TEST_SCALE=40 ARMDB_CRASH_ROUNDS=100 ARMDB_CORRUPT_ROUNDS=250 ARMDB_SHARED_ROUNDS=15

# The same suites with io_uring turned off: the pread fallback must pass them too.
check-no-uring: build check-deps
	ARMDB_NO_URING=1 $(LIGHT) ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS) -LE encrypted
	ARMDB_NO_URING=1 $(MAKE) --no-print-directory check-lua

# The C suite under AddressSanitizer + UndefinedBehaviorSanitizer.
check-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DARMDB_SANITIZE=address,undefined $(CMAKE_ARGS) >/dev/null
	cmake --build build-asan -j$(JOBS)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(LIGHT) \
	  ctest --test-dir build-asan --output-on-failure -j$(JOBS) -LE encrypted

# The concurrency tests (label "threads") under ThreadSanitizer.
check-tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DARMDB_SANITIZE=thread $(CMAKE_ARGS) >/dev/null
	cmake --build build-tsan -j$(JOBS)
	TSAN_OPTIONS=halt_on_error=1 $(LIGHT) ctest --test-dir build-tsan -L threads --output-on-failure -j$(JOBS)

# libFuzzer targets (clang) for the data-file scanner, the hint parser, the
# meta parser and the replication frames, each run FUZZ_SECONDS from the
# seeds in spec/fuzz/corpus plus every input kept in spec/fuzz/regress
# (inputs that once crashed).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := scan hint meta repl
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

# The kill -9 crash tests (single writes, then atomic batches), run much longer than in `make check`.
crash: build
	ARMDB_CRASH_ROUNDS=$${ARMDB_CRASH_ROUNDS:-5000} ./$(BUILD)/crash_kill
	ARMDB_CRASH_ROUNDS=$${ARMDB_CRASH_ROUNDS:-5000} ./$(BUILD)/crash_batch

# The core benchmark: armdb against LMDB and LevelDB, one thread, 1M keys
# (BENCH_KEYS, BENCH_REPS, BENCH_SYNC_KEYS, BENCH_COLD_KEYS, TMPDIR: see
# bench/README.md). Prints a table; the figures go to bench/results/.
# liburing and libsodium are linked only where installed and only if the
# static library uses them.
# The whole suite (bench/README.md): the device's ceiling (fio), armdb
# against LMDB, RocksDB and LevelDB, Lua in nginx against ngx.shared.DICT,
# the binding against C, then a summary with charts. BENCH_KEYS=10M for
# the large run; BENCH_REPS, BENCH_ONLY, TMPDIR as bench/suite.sh says.
BENCH_DEPS := liblmdb-dev libleveldb-dev librocksdb-dev fio wrk gnuplot-nox nginx libnginx-mod-http-lua
bench: build
	@$(MAKE) --no-print-directory deps DEPS="$(DEPS) $(BENCH_DEPS)"
	$(CC) -O2 -g -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Isrc \
	  bench/engines.c $(BUILD)/libarmdb.a -llmdb -lleveldb -lrocksdb -Wl,--as-needed \
	  $$(pkg-config --libs liburing) $$(pkg-config --libs libsodium) -lxxhash -lpthread -o $(BUILD)/bench-engines
	bench/suite.sh

# Encrypted stores against the plain one (bench/README.md, "Encryption"):
# build/bench-engines with only armdb, armdb-enc (XChaCha20-Poly1305) and
# armdb-aes (AES-256-GCM), interleaved in every repetition; puts, hot and
# cold gets and batches, durable puts on one thread, at 100 B, 1 KiB and
# 4 KiB. 500k keys by default (about 8 minutes on 2 cores), 2000 keys per
# cold sample; BENCH_KEYS, BENCH_COLD_KEYS, BENCH_REPS (default 3) and
# TMPDIR (on the real disk) as for `make bench`. The cold tests evict the
# stores' own files (--drop fadvise): armdb reads its data with O_DIRECT
# anyway, and the rest of the machine keeps its page cache.
BENCH_ENCRYPT_ONLY := fillrandom,overwrite,readrandom_hot,readrandom_cold,multiget_hot,multiget_cold,durable
bench-encrypt: build
	@$(MAKE) --no-print-directory deps DEPS="$(DEPS) liblmdb-dev libleveldb-dev librocksdb-dev"
	$(CC) -O2 -g -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Isrc \
	  bench/engines.c $(BUILD)/libarmdb.a -llmdb -lleveldb -lrocksdb -Wl,--as-needed \
	  $$(pkg-config --libs liburing) $$(pkg-config --libs libsodium) -lxxhash -lpthread -o $(BUILD)/bench-engines
	out=bench/results/encrypt-$$(date +%Y-%m-%d).json; \
	$(BUILD)/bench-engines --keys $${BENCH_KEYS:-500000} --cold-keys $${BENCH_COLD_KEYS:-2000} \
	  --reps $${BENCH_REPS:-3} --sizes 100,1024,4096 \
	  --engines armdb,armdb-enc,armdb-aes --only $(BENCH_ENCRYPT_ONLY) --durable-threads 1 --drop fadvise \
	  > $$out.tmp && mv $$out.tmp $$out && echo "bench-encrypt: $$out"

# Lua against C: the cost of a get and a put through the binding and
# through the C API, in one run (bench/README.md).
bench-lua: build
	luajit bench/lua_ops.lua $(BENCH_LUA_ARGS)

# The change feed, checkpoints and armdb_apply from Lua (bench/feed.lua).
bench-feed: build
	ARMDB_LIB=$(CURDIR)/$(BUILD)/libarmdb.so LUA_PATH="$(CURDIR)/lua/?.lua;;" luajit bench/feed.lua $(BENCH_KEYS)

bench-core: build
	@$(MAKE) --no-print-directory deps DEPS="$(DEPS) liblmdb-dev libleveldb-dev"
	$(CC) -O2 -g -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Isrc \
	  bench/core.c $(BUILD)/libarmdb.a -llmdb -lleveldb -Wl,--as-needed \
	  $$(pkg-config --libs liburing 2>/dev/null) $$(pkg-config --libs libsodium 2>/dev/null) \
	  -lxxhash -lpthread -o $(BUILD)/bench-core
	$(BUILD)/bench-core bench/results/core-$$(date +%Y-%m-%d).json

# Compaction: its throughput and the foreground's latency while it runs
# (bench/README.md). BENCH_KEYS as for bench-core.
bench-compact: build
	$(CC) -O2 -g -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Isrc \
	  bench/compact.c $(BUILD)/libarmdb.a -Wl,--as-needed $$(pkg-config --libs liburing 2>/dev/null) \
	  $$(pkg-config --libs libsodium) -lxxhash -lpthread -o $(BUILD)/bench-compact
	$(BUILD)/bench-compact $${BENCH_KEYS:-1000000} > bench/results/compact-$$(date +%Y-%m-%d).json

# Replication on loopback: the rate a follower applies a live load, its
# lag, and the catch-up of an existing store (bench/README.md). BENCH_KEYS
# and BENCH_REPS (default 3) as for bench-core.
bench-repl: build
	$(CC) -O2 -g -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Isrc \
	  bench/repl.c $(BUILD)/libarmdb.a -Wl,--as-needed $$(pkg-config --libs liburing 2>/dev/null) \
	  $$(pkg-config --libs libsodium) -lxxhash -lpthread -o $(BUILD)/bench-repl
	$(BUILD)/bench-repl $${BENCH_KEYS:-1000000} > bench/results/repl-$$(date +%Y-%m-%d).json

# The ordered index (a B+tree) against a skiplist on the same records
# (bench/README.md). BENCH_KEYS as for bench-core.
bench-ordered-index: build
	$(CC) -O2 -g -std=gnu11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Isrc \
	  bench/ordered_index.c $(BUILD)/libarmdb.a -Wl,--as-needed $$(pkg-config --libs liburing 2>/dev/null) \
	  $$(pkg-config --libs libsodium) -lxxhash -lpthread -o $(BUILD)/bench-ordered-index
	$(BUILD)/bench-ordered-index $${BENCH_KEYS:-1000000} > bench/results/ordered-index-$$(date +%Y-%m-%d).json

# HTTP GET and PUT requests/s through nginx with 2 workers under wrk
# (bench/README.md, "HTTP with 2 nginx workers"): armdb in shared mode,
# lua_shared_dict, LMDB through the FFI and an empty handler, 100k keys,
# 3 runs of 10 s each: about 5 minutes. BENCH_HTTP_* as bench/http/run says.
bench-http: build
	@$(MAKE) --no-print-directory deps DEPS="$(DEPS) nginx libnginx-mod-http-lua wrk liblmdb-dev curl"
	ARMDB_LIB=$(CURDIR)/$(BUILD)/libarmdb.so bench/http/run

# What CI runs: warnings as errors, both I/O paths, both sanitizer builds,
# and the fuzzers (20 s each here, to keep CI under 30 minutes).
check-all:
	$(MAKE) check CMAKE_ARGS=-DARMDB_WERROR=ON
	$(MAKE) check-no-uring CMAKE_ARGS=-DARMDB_WERROR=ON
	$(MAKE) check-asan CMAKE_ARGS=-DARMDB_WERROR=ON
	$(MAKE) check-tsan CMAKE_ARGS=-DARMDB_WERROR=ON
	$(MAKE) fuzz FUZZ_SECONDS=20 CMAKE_ARGS=-DARMDB_WERROR=ON

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz demo-data
