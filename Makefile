# sluice — build everything: one static library per module, the `sluice` command, the test suites.
#
#   make              build/sluice and build/lib*.a (CUDA backend too when nvcc is found)
#   make test         build and run every cmocka suite (quick tier)
#   make asan         the same suites under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)
#   make fuzz         build the libFuzzer targets (clang) into build-fuzz/
#   make CUDA=0       force the CUDA backend off;  make WERROR=1  warnings are errors (CI)
#
# Modules are folders; every .c in a module's folders goes into its library, so adding a file
# needs no Makefile change. Tests live in tests/<module>/test_*.c and link their module's
# library and its dependencies (below), nothing else.

BUILD    ?= build
CC       ?= cc
NVCC     ?= nvcc
CUDA_HOME ?= /usr/local/cuda
OPT      ?= -O2
WERROR   ?= 0
SANITIZE ?=

NVCC_FOUND := $(shell command -v $(NVCC) 2>/dev/null)
ifeq ($(origin CUDA), undefined)
  CUDA := $(if $(NVCC_FOUND),1,0)
endif
ifneq ($(SANITIZE),)
  CUDA := 0
endif

# -ffp-contract=off: no compiler-made FMAs (gcc's ISO mode already has none; clang would fuse):
# the sampler's penalties must round as the CUDA sampler's __fmul_rn/__fadd_rn do.
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -Wshadow -Wno-unused-parameter \
               -pthread -fno-strict-aliasing -ffp-contract=off -I. \
               $(shell pkg-config --cflags gsl sqlite3 libcjson 2>/dev/null)
ifeq ($(WERROR),1)
  CFLAGS_BASE += -Werror
endif
ifneq ($(SANITIZE),)
  CFLAGS_BASE += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS_SAN := -fsanitize=$(SANITIZE)
endif
ifeq ($(CUDA),1)
  CFLAGS_BASE += -DSLUICE_HAVE_CUDA=1 -I$(CUDA_HOME)/include
endif
CFLAGS ?=
LDFLAGS ?= # e.g. -L/opt/x/lib -Wl,-rpath,/opt/x/lib for libraries outside the system's paths
ALL_CFLAGS := $(CFLAGS_BASE) $(CFLAGS)

CUDA_ARCHS ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
NVCCFLAGS  ?= -O3 -std=c++17 -I. -lineinfo $(CUDA_ARCHS) -Xcompiler -fPIC,-Wall

# ---- modules: name, source folders, dependencies (libraries it may call), system libraries ----
MODULES := sched workloads analysis sim engine http cli

SRC_sched     := $(wildcard sched/*.c)
SRC_workloads := $(wildcard workloads/*.c)
SRC_analysis  := $(wildcard analysis/*.c)
SRC_sim       := $(wildcard sim/*.c)
SRC_engine    := $(wildcard engine/*.c engine/cpu/*.c) $(if $(filter 1,$(CUDA)),$(wildcard engine/cuda/*.c))
SRC_http      := $(wildcard engine/http/*.c)
SRC_cli       := $(filter-out cli/main.c,$(wildcard cli/*.c))

DEPS_sched     :=
DEPS_workloads := sched
DEPS_analysis  := workloads sched
DEPS_sim       := workloads sched
DEPS_engine    := sched
DEPS_http      := engine sched
DEPS_cli       := http sim analysis engine workloads sched

SYSLIBS := $(shell pkg-config --libs gsl sqlite3 libcjson libmicrohttpd 2>/dev/null || echo -lgsl -lgslcblas -lsqlite3 -lcjson -lmicrohttpd) -lm -lpthread -ldl
ifeq ($(CUDA),1)
  CU_SRC  := $(wildcard engine/cuda/*.cu)
  CU_OBJ  := $(CU_SRC:%.cu=$(BUILD)/%.o)
  SYSLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++
endif

lib = $(BUILD)/lib$(1).a
objs = $(patsubst %.c,$(BUILD)/%.o,$(SRC_$(1)))
# the library files a module links, itself first, in dependency order
linklibs = $(call lib,$(1)) $(foreach d,$(DEPS_$(1)),$(call lib,$(d)))

.PHONY: all test asan fuzz clean examples benches FORCE
all: $(BUILD)/sluice

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

# The x86 kernel files are chosen at run time by CPU detection; each is compiled for its own ISA
# (GCC also honours their `#pragma GCC target`; clang needs the flags).
$(BUILD)/engine/cpu/kernels_avx2.o: ALL_CFLAGS += -mavx2 -mfma -mf16c
$(BUILD)/engine/cpu/kernels_avx512.o: ALL_CFLAGS += -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512vnni
$(BUILD)/engine/cpu/kernels_amx.o: ALL_CFLAGS += -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512vnni \
	-mamx-tile -mamx-int8

define MODULE_RULES
$(call lib,$(1)): $(call objs,$(1)) $(if $(filter engine,$(1)),$(CU_OBJ))
	@mkdir -p $$(dir $$@)
	rm -f $$@ && ar rcs $$@ $$^
endef
$(foreach m,$(MODULES),$(eval $(call MODULE_RULES,$(m))))

# The build's `git describe`, recorded with every run (the file changes only when the revision does).
REVISION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
$(BUILD)/revision.h: FORCE
	@mkdir -p $(BUILD) && echo '#define SLUICE_REVISION "$(REVISION)"' > $@.tmp && \
	    (cmp -s $@.tmp $@ || mv $@.tmp $@); rm -f $@.tmp
$(BUILD)/cli/cli.o: $(BUILD)/revision.h
$(BUILD)/cli/cli.o: ALL_CFLAGS += -I$(BUILD)
FORCE:

$(BUILD)/sluice: $(BUILD)/cli/main.o $(call linklibs,cli)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(SYSLIBS) $(LDFLAGS) $(LDFLAGS_SAN)

# ---- tests: tests/<module>/test_*.c -> $(BUILD)/tests/<module>/test_* ----
TEST_SRC := $(foreach m,$(MODULES),$(wildcard tests/$(m)/test_*.c))
TEST_BIN := $(TEST_SRC:%.c=$(BUILD)/%)
TEST_HELPERS := $(wildcard tests/common/*.c)
TEST_HELPER_OBJ := $(TEST_HELPERS:%.c=$(BUILD)/%.o)

define TEST_RULES
$(BUILD)/tests/$(1)/%: tests/$(1)/%.c $(TEST_HELPER_OBJ) $(call linklibs,$(1))
	@mkdir -p $$(dir $$@)
	$(CC) $(ALL_CFLAGS) -Itests -o $$@ $$< $(TEST_HELPER_OBJ) $(call linklibs,$(1)) -lcmocka $(SYSLIBS) $(LDFLAGS) $(LDFLAGS_SAN)
endef
$(foreach m,$(MODULES),$(eval $(call TEST_RULES,$(m))))

# Per-module test targets (make test-sched) so work on one module never waits on another.
$(foreach m,$(MODULES),$(eval test-$(m): $(filter $(BUILD)/tests/$(m)/%,$(TEST_BIN)) ; @scripts/run-tests.sh $$^))
# The C API example must keep compiling (docs/examples/generate.c).
examples: $(BUILD)/examples/generate
$(BUILD)/examples/%: docs/examples/%.c $(call linklibs,engine)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Iinclude -o $@ $< $(call linklibs,engine) $(SYSLIBS) $(LDFLAGS) $(LDFLAGS_SAN)

# The benchmarks must keep compiling (tests/bench/*.c; bench_cuda only in a CUDA build): `make
# benches`, run by scripts/bench-*.sh and scripts/device-check.sh.
BENCH_SRC := $(filter-out $(if $(filter 1,$(CUDA)),,tests/bench/bench_cuda.c),$(wildcard tests/bench/*.c))
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)
benches: $(BENCH_BIN)
$(BUILD)/bench/%: tests/bench/%.c $(call linklibs,cli)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(call linklibs,cli) $(SYSLIBS) $(LDFLAGS) $(LDFLAGS_SAN)

test: $(BUILD)/sluice $(TEST_BIN) examples benches
	@scripts/run-tests.sh $(TEST_BIN)
	@SLUICE_BIN=$(BUILD)/sluice scripts/test-serve.sh
	@SLUICE_BIN=$(BUILD)/sluice scripts/test-validate.sh
	$(if $(SANITIZE),,@BUILD=$(BUILD) scripts/test-kernel-ab.sh)

asan:
	$(MAKE) BUILD=build-asan SANITIZE=address,undefined OPT=-O1 test

# ---- fuzz targets: tests/fuzz/fuzz_*.c, libFuzzer (clang), sanitizers on ----
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
fuzz:
	$(MAKE) BUILD=build-fuzz CC=clang SANITIZE=address,undefined OPT=-O1 \
	    CFLAGS="-fsanitize=fuzzer-no-link" $(FUZZ_SRC:tests/fuzz/%.c=build-fuzz/fuzz/%)

$(BUILD)/fuzz/%: tests/fuzz/%.c $(call linklibs,cli)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(SYSLIBS) $(LDFLAGS) $(LDFLAGS_SAN)

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
