# chatmail-box BR2_EXTERNAL tree: include every package of the tree.
include $(sort $(wildcard $(BR2_EXTERNAL_CHATMAIL_PATH)/package/*/*.mk))
