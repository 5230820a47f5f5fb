#!/bin/sh
# Buildroot post-build: $1 = TARGET_DIR. Mount points for the data partition and RAM dirs, and a
# check that the relay binary sits where the inittab starts it.
set -eu
TARGET_DIR=$1
mkdir -p "$TARGET_DIR/data" "$TARGET_DIR/var/log"
test -x "$TARGET_DIR/usr/bin/chatmail-box" || {
    echo "post-build: /usr/bin/chatmail-box missing (BR2_PACKAGE_CHATMAIL_RELAY)" >&2
    exit 1
}
# Logs live in RAM (syslogd -C in S01logging); /var/log is a tmpfs from fstab.
