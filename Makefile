# imapmem: `make` builds the server, `make test` runs every test, `make bench` measures it.
CC ?= cc
CFLAGS ?= -O2 -g
WARN = -std=c11 -pedantic -Wall -Wextra -Werror
SAN = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
PY ?= python3

all: imapmem

# TLS is opt-in: `make TLS=openssl` builds ./imapmem with STARTTLS and IMAPS through
# OpenSSL (Debian: libssl-dev). Plain `make` needs neither OpenSSL's headers nor its
# libraries, and build/tls-flavor makes ./imapmem rebuild when TLS= changes.
TLS_CFLAGS = -DIMAPMEM_TLS
TLS_LIBS = -lssl -lcrypto
ifeq ($(TLS),openssl)
IMAPMEM_TLS_FLAGS = $(TLS_CFLAGS)
IMAPMEM_TLS_LIBS = $(TLS_LIBS)
else ifneq ($(TLS),)
$(error TLS=$(TLS): the one TLS library imapmem builds with is OpenSSL: make TLS=openssl)
endif
FLAVOR := $(shell mkdir -p build && (echo '$(TLS)' | cmp -s - build/tls-flavor || \
                                     echo '$(TLS)' > build/tls-flavor))

imapmem: imapmem.c imapmem.h build/tls-flavor
	$(CC) $(WARN) $(CFLAGS) -pthread -DIMAPMEM_MAIN $(IMAPMEM_TLS_FLAGS) imapmem.c -o $@ \
	  $(IMAPMEM_TLS_LIBS)

build:
	mkdir -p build

build/imapmem-asan: imapmem.c imapmem.h | build
	$(CC) $(WARN) -O1 -g $(SAN) -pthread -DIMAPMEM_MAIN imapmem.c -o $@

build/imapmem-tsan: imapmem.c imapmem.h | build
	$(CC) $(WARN) -O1 -g -fsanitize=thread -pthread -DIMAPMEM_MAIN imapmem.c -o $@

build/unit: test/unit.c imapmem.c imapmem.h | build
	$(CC) $(WARN) -O1 -g -pthread test/unit.c -o $@

build/unit-asan: test/unit.c imapmem.c imapmem.h | build
	$(CC) $(WARN) -O1 -g $(SAN) -pthread test/unit.c -o $@

# The unit tests under ThreadSanitizer: the loader's reader thread and the build-ahead
# helper run there with small chunks and small mailboxes.
build/unit-tsan: test/unit.c imapmem.c imapmem.h | build
	$(CC) $(WARN) -O1 -g -fsanitize=thread -pthread test/unit.c -o $@

# In-process tests: they add imapmem.c and imapmem.h to their build, as an embedder would.
build/api_test: test/api_test.c imapmem.c imapmem.h | build
	$(CC) $(WARN) -O1 -g $(SAN) -pthread -I. test/api_test.c imapmem.c -o $@

# The same in-process tests under ThreadSanitizer.
build/api_test-tsan: test/api_test.c imapmem.c imapmem.h | build
	$(CC) $(WARN) -O1 -g -fsanitize=thread -pthread -I. test/api_test.c imapmem.c -o $@

# The same source through clang too: it must build without a warning under both compilers.
CLANG := $(shell command -v clang 2>/dev/null)
build/imapmem-clang: imapmem.c imapmem.h | build
	$(CLANG) $(WARN) -O2 -pthread -DIMAPMEM_MAIN imapmem.c -o $@

# The server built against musl as well as glibc, when Debian's musl-tools is there.
MUSL_CC := $(shell command -v musl-gcc 2>/dev/null)
build/imapmem-musl: imapmem.c imapmem.h | build
	$(MUSL_CC) $(WARN) -O1 -g -pthread -DIMAPMEM_MAIN imapmem.c -o $@

# The TLS build beside the plain one, when OpenSSL's headers are there (libssl-dev), as
# for musl-gcc and clang: plain and under ASan+UBSan.
HAVE_OPENSSL := $(shell printf '\043include <openssl/ssl.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 \
                  && echo yes)
build/imapmem-tls: imapmem.c imapmem.h | build
	$(CC) $(WARN) -O1 -g -pthread -DIMAPMEM_MAIN $(TLS_CFLAGS) imapmem.c -o $@ $(TLS_LIBS)

build/imapmem-tls-asan: imapmem.c imapmem.h | build
	$(CC) $(WARN) -O1 -g $(SAN) -pthread -DIMAPMEM_MAIN $(TLS_CFLAGS) imapmem.c -o $@ $(TLS_LIBS)

# The TLS build under ThreadSanitizer, for the concurrency tests over TLS. OpenSSL itself is
# not instrumented: TSan sees imapmem's own accesses around it, which is where a race would be.
build/imapmem-tls-tsan: imapmem.c imapmem.h | build
	$(CC) $(WARN) -O1 -g -fsanitize=thread -pthread -DIMAPMEM_MAIN $(TLS_CFLAGS) imapmem.c -o $@ \
	  $(TLS_LIBS)

build/api_test-tls: test/api_test.c imapmem.c imapmem.h | build
	$(CC) $(WARN) -O1 -g $(SAN) -pthread -I. $(TLS_CFLAGS) test/api_test.c imapmem.c -o $@ \
	  $(TLS_LIBS)

build/embed_example: test/embed_example.c imapmem.c imapmem.h | build
	$(CC) $(WARN) -O1 -g -pthread -I. test/embed_example.c imapmem.c -o $@

TLS_WIRE = --c build/api_test-tls \
  --wire 'build/imapmem-tls:test_tls.py,test_commands.py,test_over_tls.py,test_tls_concurrency.py,test_auth.py' \
  --wire 'build/imapmem-tls-asan:test_tls.py,test_over_tls.py,test_tls_concurrency.py' \
  --wire 'build/imapmem-tls-tsan:test_tls.py,test_tls_concurrency.py'

TLS_BINS = build/imapmem-tls build/imapmem-tls-asan build/imapmem-tls-tsan build/api_test-tls

TEST_BINS = imapmem build/imapmem-asan build/imapmem-tsan build/unit build/unit-asan build/unit-tsan \
  build/api_test build/api_test-tsan build/embed_example $(if $(MUSL_CC),build/imapmem-musl) \
  $(if $(CLANG),build/imapmem-clang) $(if $(HAVE_OPENSSL),$(TLS_BINS))

# Every test: the layering check of imapmem.c, C unit tests (plain, under ASan+UBSan and
# under TSan), the in-process API tests under ASan+UBSan and under TSan, the wire tests
# against the plain, the ASan+UBSan and (with musl-gcc) the musl server, and the
# multi-client and concurrency tests against the TSan server; with OpenSSL, the in-process
# API tests, the TLS tests, the commands' tests (STARTTLS now offered) and
# test_over_tls.py (the commands', FETCH and multi-session tests with every client over
# TLS) against the TLS build, plain and under ASan+UBSan, and the TLS and TLS-concurrency
# tests against it under TSan.
test: $(TEST_BINS)
	$(PY) test/run.py --py test/check_layering.py \
	  --c build/unit --c build/unit-asan --c build/unit-tsan --c build/api_test \
	  --c build/api_test-tsan --c 'valgrind:build/embed_example' \
	  --wire ./imapmem --wire build/imapmem-asan $(if $(MUSL_CC),--wire build/imapmem-musl) \
	  --wire 'build/imapmem-tsan:test_multi.py,test_concurrency.py,test_quota.py,test_notify.py' \
	  $(if $(HAVE_OPENSSL),$(TLS_WIRE)) \
	  $(if $(CLANG),--c test/fuzz/smoke) $(if $(DOVECOT),--py test/difftest.py)

# libFuzzer targets (test/fuzz/README.md): each for FUZZ_SECONDS (default 60).
fuzz:
	$(PY) test/fuzz/run.py

# imapmem against a private Dovecot on the same corpus (see the README's Fidelity notes);
# part of `make test` when Debian's dovecot-imapd is installed, skipped without it.
DOVECOT := $(shell test -x /usr/sbin/dovecot && echo /usr/sbin/dovecot)
difftest: imapmem
	$(PY) test/difftest.py

# Benchmarks (never part of `make test`): see the README's Performance section.
build/bench_ref: test/bench_ref.c test/bench_util.h | build
	$(CC) $(WARN) -O2 test/bench_ref.c -o $@

# What a MODSEQ costs each message, from the compiled struct (it includes imapmem.c).
build/bench_sizes: test/bench_sizes.c imapmem.c imapmem.h | build
	$(CC) $(WARN) -O2 -pthread test/bench_sizes.c -o $@

# The load generator of the concurrency items: a few threads, each an epoll loop over many
# connections (libc and pthreads only).
build/bench_load: test/bench_load.c test/bench_util.h | build
	$(CC) $(WARN) -O2 -pthread test/bench_load.c -o $@

bench: imapmem build/bench_ref build/bench_sizes build/bench_load
	$(PY) test/bench.py

clean:
	rm -rf build imapmem

.PHONY: all test bench fuzz difftest clean
