# vmunit's build and test entry points. `make check` is the project's test command.

CARGO ?= cargo
X86_GUESTS := $(notdir $(patsubst %/Cargo.toml,%,$(wildcard tests-x86/*/Cargo.toml)))
X86_PACKAGES := $(addprefix -p ,$(X86_GUESTS))
AARCH64_GUESTS := $(notdir $(patsubst %/Cargo.toml,%,$(wildcard tests-aarch64/*/Cargo.toml)))
AARCH64_PACKAGES := $(addprefix -p ,$(AARCH64_GUESTS))

.PHONY: all runner guests check test lint editor-check clean bench new-test standalone install uninstall

all: runner guests

runner:
	$(CARGO) build --profile runner -p vmunit-runner

guests:
	$(CARGO) build --release --target x86_64-unknown-none $(X86_PACKAGES)
	$(CARGO) build --release --target aarch64-unknown-none $(AARCH64_PACKAGES)

# Formatting, and clippy on the host crates and on every guest, warnings denied.
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy -q --all-targets -p vmunit -p vmunit-macros -p vmunit-protocol -p vmunit-runner -- -D warnings
	$(CARGO) clippy -q --release --target x86_64-unknown-none $(X86_PACKAGES) -- -D warnings
	$(CARGO) clippy -q --release --target aarch64-unknown-none $(AARCH64_PACKAGES) -- -D warnings

# The framework's own tests: runtime unit tests, runner unit tests, and the fixture guests
# whose known outcomes (pass, fail, skip, panic, exception, triple fault, hang, KVM internal
# error) the runner must classify correctly.
test:
	$(CARGO) test -q -p vmunit -p vmunit-macros -p vmunit-protocol -p vmunit-runner

# Everything: lint, the framework's tests, the editor setup (no rust-analyzer error in any
# window README.md names), the commands of docs/ (scripts/test-docs), then the
# guest suite under the default accelerator (KVM when usable) and under TCG. The last line is
# the runner's summary.
check: lint test editor-check
	scripts/test-docs
	./run_tests -j 2
	./run_tests -j 2 --accel tcg

# What rust-analyzer reports in each editor window README.md names (scripts/editor-diagnostics):
# no error on an unchanged checkout. Needs the rust-analyzer and rust-src components.
editor-check:
	@if rust-analyzer --version >/dev/null 2>&1 && [ -d "$$(rustc --print sysroot)/lib/rustlib/src/rust/library" ]; \
	then scripts/editor-diagnostics; \
	else echo "editor-check: skipped: no rust-analyzer or no rust-src (rustup component add rust-analyzer rust-src)"; fi

# Standalone tests: one shell script per unittests.toml entry in tests/, with the guest image
# embedded; they need only QEMU and a POSIX shell (see runner/src/standalone.rs).
PREFIX ?= /usr/local
DESTDIR ?=
STANDALONE_DIRECTORY := tests
INSTALL_DIRECTORY = $(DESTDIR)$(PREFIX)/share/vmunit

standalone: guests runner
	rm -rf $(STANDALONE_DIRECTORY)
	./run_tests --standalone $(STANDALONE_DIRECTORY)

install: standalone
	install -d $(INSTALL_DIRECTORY)/tests
	install -m 755 $(STANDALONE_DIRECTORY)/* $(INSTALL_DIRECTORY)/tests/
	install -m 755 scripts/vmunit-run-all $(INSTALL_DIRECTORY)/vmunit-run-all

uninstall:
	rm -rf $(INSTALL_DIRECTORY)

# Scaffolds a test: make new-test ARCH=x86_64 NAME=my-test (see scripts/new-test).
new-test:
	scripts/new-test $(ARCH) $(NAME)

# Timings and sizes on this machine, written to BENCHMARKS.md (a few minutes).
bench:
	scripts/bench

clean:
	$(CARGO) clean
	rm -rf logs logs.old
