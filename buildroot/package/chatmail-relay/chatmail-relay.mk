################################################################################
#
# chatmail-relay: installs the prebuilt static chatmail-box binary (make aarch64)
#
################################################################################

CHATMAIL_RELAY_VERSION = local
# Nothing to download or extract: the binary is built and tested outside Buildroot.
CHATMAIL_RELAY_SOURCE =
CHATMAIL_RELAY_LICENSE = MIT or Apache-2.0
CHATMAIL_RELAY_BINARY = $(call qstrip,$(BR2_PACKAGE_CHATMAIL_RELAY_BINARY))

# user uid group gid password home shell groups comment
define CHATMAIL_RELAY_USERS
	chatmail -1 chatmail -1 * /data/chatmail - - chatmail relay
endef

define CHATMAIL_RELAY_INSTALL_TARGET_CMDS
	test -f $(CHATMAIL_RELAY_BINARY) || \
		{ echo "chatmail-relay: $(CHATMAIL_RELAY_BINARY) missing; run make aarch64" >&2; exit 1; }
	$(INSTALL) -D -m 0755 $(CHATMAIL_RELAY_BINARY) $(TARGET_DIR)/usr/bin/chatmail-box
	# The clock client (S45clock, inittab) under its own process name: pidof/killall
	# chatmail-box then mean the relay only. A hard link: BusyBox also matches the target of
	# /proc/<pid>/exe, which a symlink would resolve to chatmail-box.
	ln -f $(TARGET_DIR)/usr/bin/chatmail-box $(TARGET_DIR)/usr/bin/chatmail-clock
endef

$(eval $(generic-package))
