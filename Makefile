# Thin wrapper over CMake. `make demo` and `make check` work on a fresh
# Debian machine: missing packages are installed when run as root, else the
# exact apt-get command is printed.

BUILD    ?= build
JOBS     ?= $(shell nproc)
CMAKE_ARGS ?=
DEPS     := cmake make gcc pkg-config libxxhash-dev

.PHONY: all deps build demo check check-asan check-tsan check-all clean

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

# What CI runs: warnings as errors, then both sanitizer builds.
check-all:
	$(MAKE) check CMAKE_ARGS=-DARMDB_WERROR=ON
	$(MAKE) check-asan CMAKE_ARGS=-DARMDB_WERROR=ON
	$(MAKE) check-tsan CMAKE_ARGS=-DARMDB_WERROR=ON

clean:
	rm -rf $(BUILD) build-asan build-tsan demo-data
