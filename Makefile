# chatmail-box: see README.md.
CARGO ?= cargo
BIN_DEBUG := target/debug/chatmail-box
BIN_RELEASE := target/release/chatmail-box

.PHONY: all build release run test test-rust test-py bench lint fmt clean-data aarch64 aarch64-smoke \
	qemu-image qemu-test image

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

## make run: start the relay with embedded defaults (data in ./data, self-signed certificate,
## unprivileged ports when not root) and print an invite for a Delta Chat client on this machine.
run: release
	$(BIN_RELEASE) --data-dir data serve --invite

## make test: every test, including the real Delta Chat client tests and the emulated appliance
## boots (make qemu-test: builds the aarch64 binary with the `qemu-test` profile, ~9 min cold).
test: test-rust test-py qemu-test

# chronyd for tests/clock_sntp.rs (scripts/chronyd.sh); outside CI the test skips without it.
test-rust:
	scripts/chronyd.sh >/dev/null || [ -z "$$CI" ]
	$(CARGO) build --bins
	$(CARGO) test --all-targets

test-py: build
	scripts/pytest.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## make bench: performance numbers (not part of make test).
bench: release
	scripts/bench.sh

## make aarch64: static aarch64-unknown-linux-musl release binary for the appliance (installs the
## rustup target, clang and llvm if missing). Output: target/cross/aarch64-unknown-linux-musl/release/
## chatmail-box(.stripped). Slow (10-28 min cold on 2 cores): make test builds the faster
## `qemu-test` profile instead (AARCH64_PROFILE=qemu-test).
aarch64:
	scripts/aarch64.sh

## make aarch64-smoke: run that binary under qemu-aarch64: --help, check-config, serve answering TCP.
aarch64-smoke: aarch64
	scripts/aarch64-smoke.sh

## make image: the real SD-card image with Buildroot (BOARD=rpi4_64|rpi5|rpi3_64|zero2w_64).
## NEEDS INTERNET (Buildroot and all its sources are downloaded). Output:
## target/buildroot/<BOARD>/images/sdcard.img.
image:
	scripts/image.sh

## make qemu-image: the offline SD-card image (Debian arm64 kernel, busybox-static, raspi-firmware,
## the static binary; same overlay and genimage layout as buildroot/). Output: target/qemu/images.
qemu-image:
	scripts/qemu-image.sh

## make qemu-test: boot that image under qemu-system-aarch64 (raspi3b + Zero 2 W DTB, then virt with
## virtio-gpu) in a private network namespace: relay at boot in setup mode, SNTP clock, ro root,
## data mount and persistence, LED/GPIO patterns (setup needed, then healthy after the wizard),
## watchdog, framebuffer QR (wizard address, then invite), hard reset during submission.
## Brings the aarch64 binary (AARCH64_PROFILE, default qemu-test) up to date first.
qemu-test:
	scripts/qemu-test.sh

clean-data:
	rm -rf data
