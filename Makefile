# berth: `make demo` runs the main job, `make test` runs every check.
# Both install what they need first (Debian 12, as root).

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
BERTH := target/release/berth

.PHONY: setup build demo test bench clean

setup:
	@scripts/setup.sh
	@$(CARGO) --version >/dev/null || { echo "make: cargo is missing; install Rust (rustup) first" >&2; exit 1; }

build: setup
	$(CARGO) build --release --workspace --bins

demo: build
	@scripts/demo.sh

test: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

bench: build
	target/release/berth-bench

clean:
	$(CARGO) clean
