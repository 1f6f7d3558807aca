# berth: `make demo` runs the main job, `make test` runs every check.
# Both install what they need first (Debian 12, as root).

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
BERTH := target/release/berth

.PHONY: setup build agent demo test bench fuzz clean

setup:
	@scripts/setup.sh
	@$(CARGO) --version >/dev/null || { echo "make: cargo is missing; install Rust (rustup) first" >&2; exit 1; }

build: setup
	$(CARGO) build --release --workspace --bins --exclude berth-fuzz
	@scripts/build-agent.sh --release

# The microVM guest's init, static (target/x86_64-unknown-linux-gnu/release).
agent:
	@scripts/build-agent.sh --release

demo: build
	@scripts/demo.sh

test: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@scripts/build-agent.sh --target-dir target/agent
	$(CARGO) test --workspace
	$(CARGO) build -p berth-fuzz
	@scripts/fuzz.sh --smoke

# Every fuzz target for FUZZ_SECONDS (60) each, coverage-guided (cargo fuzz).
fuzz: setup
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@scripts/fuzz.sh

bench: build
	target/release/berth-bench

clean:
	$(CARGO) clean
