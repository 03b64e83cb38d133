# nta-harness. 'make demo' and 'make test' set everything up themselves.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
TESTS   ?= tests
PY      := $(VENV)/bin/python
NTA     := $(VENV)/bin/nta
STAMP   := $(VENV)/.installed
IMIX    := build/imix.pcap
DEMO_LOOPS ?= 15000
NTA_SRC := $(wildcard allocator/*.c allocator/*.h)
HC_SRC  := $(wildcard harness/csrc/*.c harness/csrc/*.h) bpf/nta_shared.h
LIBNTA  := build/libnta.so
NTA_MOD := build/.nta_c.built
HC_MOD  := build/.harness_c.built
SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
# -fno-tree-slp-vectorize: at -O2 GCC 12 joins two adjacent counters one call updates into a 16-byte load
# and store (the pool's frags and frag_bytes, the arena's bytes requested and handed), where the call
# before wrote them with two 8-byte stores: a load the store buffer cannot forward, as pp_head's was
CFLAGS  := -std=gnu11 -O2 -fno-tree-slp-vectorize -Wall -Wextra -Werror -pthread
CFLAGS_TEST := -std=gnu11 -g -O1 -Wall -Wextra -Werror $(SAN) -pthread -Iallocator -Iharness/csrc -Ibpf

.PHONY: help setup setup-system setup-test setup-bench build build-tests ctest test vm-test demo bench lint clean distclean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: setup-system $(STAMP) ## apt packages, kernel-headers link, venv, PyPI packages; then check BPF
	@$(NTA) doctor --quiet

setup-system:
	@scripts/setup-system.sh

setup-test: setup
	@scripts/setup-system.sh --test

setup-bench: setup
	@scripts/setup-system.sh --bench

# The venv sees Debian's python3-bpfcc (BCC) through --system-site-packages.
$(STAMP): pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@echo "setup: installing the Python packages into $(VENV)"
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

build: $(IMIX) $(NTA_MOD) $(HC_MOD) build/trace build/xthread build/poolbench ## build the allocator, the harness's C modules, bench drivers, the IMIX capture

# the allocator, one shared object: its binding and the controller's module both link it
$(LIBNTA): $(NTA_SRC)
	@mkdir -p build
	@$(CC) $(CFLAGS) -shared -fPIC -fvisibility=hidden allocator/*.c -o $@

# cffi modules, declarations generated from the real headers
$(NTA_MOD): $(LIBNTA) allocator/build_cffi.py | $(STAMP)
	@$(PY) allocator/build_cffi.py
	@touch $@

$(HC_MOD): $(NTA_MOD) $(HC_SRC) harness/csrc/build_cffi.py | $(STAMP)
	@$(PY) harness/csrc/build_cffi.py
	@touch $@

build/trace: $(NTA_SRC) allocator/bench/trace.c allocator/bench/bench.h
	@mkdir -p build
	@$(CC) $(CFLAGS) -Iallocator allocator/*.c allocator/bench/trace.c -lm -o $@

build/xthread: $(NTA_SRC) allocator/bench/xthread.c allocator/bench/bench.h
	@mkdir -p build
	@$(CC) $(CFLAGS) -Iallocator allocator/*.c allocator/bench/xthread.c -lm -o $@

build/poolbench: $(NTA_SRC) allocator/bench/pool.c
	@mkdir -p build
	@$(CC) $(CFLAGS) -Iallocator allocator/*.c allocator/bench/pool.c -lm -o $@

# C tests: the allocator's, and the harness's C (with the allocator where it calls it)
build/test_nta build/test_pool build/test_pressure: build/test_%: $(NTA_SRC) tests/c/test_%.c tests/c/expect.h
	@mkdir -p build
	$(CC) $(CFLAGS_TEST) allocator/*.c tests/c/test_$*.c -lm -o $@

build/test_ctl: $(NTA_SRC) $(HC_SRC) tests/c/test_ctl.c tests/c/expect.h
	@mkdir -p build
	$(CC) $(CFLAGS_TEST) allocator/*.c harness/csrc/ctl.c harness/csrc/ctl_flows.c harness/csrc/handoff.c tests/c/test_ctl.c -lm -o $@

# many threads posting remote puts to one pool's owner: under ThreadSanitizer (which excludes ASan; it does not
# model the standalone fences of the sequence locks the counters are published under, for other processes)
build/test_remote: $(NTA_SRC) tests/c/test_remote.c tests/c/expect.h
	@mkdir -p build
	$(CC) $(filter-out $(SAN),$(CFLAGS_TEST)) -fsanitize=thread -Wno-tsan allocator/*.c tests/c/test_remote.c -lm -o $@

# the controller handing its frees to a reader thread that posts them to the owner: ThreadSanitizer too
build/test_handoff: $(NTA_SRC) $(HC_SRC) tests/c/test_handoff.c tests/c/expect.h
	@mkdir -p build
	$(CC) $(filter-out $(SAN),$(CFLAGS_TEST)) -fsanitize=thread -Wno-tsan allocator/*.c harness/csrc/ctl.c harness/csrc/ctl_flows.c \
		harness/csrc/handoff.c tests/c/test_handoff.c -lm -o $@

build/test_replay: $(HC_SRC) tests/c/test_replay.c tests/c/expect.h
	@mkdir -p build
	$(CC) $(CFLAGS_TEST) harness/csrc/replay.c tests/c/test_replay.c -lbpf -o $@

CTEST_BINS := build/test_nta build/test_pool build/test_pressure build/test_remote build/test_ctl build/test_handoff \
	build/test_replay

build-tests: $(CTEST_BINS)

ctest: $(CTEST_BINS) ## C tests (allocator, controller, replayer) under AddressSanitizer and UndefinedBehaviorSanitizer; remote puts and the reader's handoff under ThreadSanitizer
	build/test_nta
	build/test_pool
	build/test_pressure
	build/test_remote
	build/test_ctl
	build/test_handoff
	build/test_replay

$(IMIX): harness/imix.py | $(STAMP)
	@$(NTA) pcap imix $@

test: setup-test build ctest ## run every test (netns tests need root: real XDP on veth); TESTS=path: only those
	$(PY) -m pytest $(TESTS)

vm-test: ## make test inside a Debian 12 VM on Debian's stock kernel (6.1): the image built once and kept in .vm/; TESTS=path: only those
	@NTA_VM_TESTS="$(TESTS)" scripts/vm-test.sh

demo: setup build ## replay IMIX over a veth pair: XDP metadata -> controller -> page pool, pps and losses
	$(NTA) run --pcap $(IMIX) --loops $(DEMO_LOOPS) --topspeed --replayer xdp --controller --hold flow:16 --json build/demo.json

bench: setup-bench build ## benchmarks: allocators vs peers, fragmentation, bulk, page pool, end to end, replay, memory at the limit
	$(NTA) bench alloc --json build/bench-alloc.json
	$(NTA) bench alloc --pattern producer-consumer --json build/bench-alloc-producer-consumer.json
	$(NTA) bench alloc --pattern per-thread --json build/bench-alloc-per-thread.json
	$(NTA) bench frag --plot build --json build/bench-frag.json
	$(NTA) bench bulk --json build/bench-bulk.json
	$(NTA) bench pool --json build/bench-pool.json
	$(NTA) bench e2e --json build/bench-e2e.json
	$(NTA) bench replay --json build/bench-replay.json
	$(NTA) bench real --plot build --json build/bench-real.json
	$(NTA) bench real --rx afxdp --holds flow:16,random:3000 --allocators nta,slab --json build/bench-real-afxdp.json
	$(NTA) bench real --rx afxdp --holds flow:16,random:3000 --allocators nta,slab --copybreak 1024 --json build/bench-real-afxdp-copybreak.json
	$(NTA) bench pressure --permit 'udp port 10003' --plot build --json build/bench-pressure.json

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check harness tests

clean: ## remove build outputs
	rm -rf build .pytest_cache harness/_*_c*.so harness/libnta.so
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## also remove the venv and the VM image of 'make vm-test'
	rm -rf $(VENV) *.egg-info .vm
