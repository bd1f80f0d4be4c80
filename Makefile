# Thin wrapper over CMake and CTest. `make run` and `make test` are the two
# commands a newcomer needs; both install what is missing first.
BUILD ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
ARGS ?=
CMAKE_FLAGS ?=

.PHONY: all deps configure build run test bench asan clang format clean

all: build

deps:
	@scripts/deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j$(JOBS)

# Starts fanoutd on the embedded default (file origin on deploy/examples/config.d).
run: build
	./$(BUILD)/server/fanoutd $(ARGS)

test: build
	@tests/run.sh $(BUILD)

bench: build
	@bench/run.sh $(BUILD)

asan:
	@$(MAKE) test BUILD=build-asan BUILD_TYPE=RelWithDebInfo CMAKE_FLAGS="-DFANOUT_SANITIZE=address"

# A clang build, for -Wthread-safety.
clang:
	@$(MAKE) build BUILD=build-clang CMAKE_FLAGS="-DCMAKE_CXX_COMPILER=clang++"

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i

clean:
	rm -rf build build-*
