//! The Buildroot external tree (buildroot/) and board files (board/): required files exist, every
//! path a defconfig names inside the tree exists, and the package installs the binary where the
//! inittab starts it.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn external_tree_has_required_files() {
    let br = root().join("buildroot");
    for f in ["external.desc", "Config.in", "external.mk"] {
        assert!(br.join(f).is_file(), "buildroot/{f}");
    }
    let desc = std::fs::read_to_string(br.join("external.desc")).unwrap();
    assert!(desc.lines().any(|l| l.trim() == "name: CHATMAIL"));
    let config_in = std::fs::read_to_string(br.join("Config.in")).unwrap();
    for line in config_in.lines().filter(|l| l.starts_with("source")) {
        let p = line
            .split('"')
            .nth(1)
            .unwrap()
            .replace("$BR2_EXTERNAL_CHATMAIL_PATH", br.to_str().unwrap());
        assert!(Path::new(&p).is_file(), "{p}");
    }
}

#[test]
fn defconfig_paths_exist() {
    let br = root().join("buildroot");
    let mut n = 0;
    for name in [
        "chatmail_rpi4_64_defconfig",
        "chatmail_rpi5_defconfig",
        "chatmail_rpi3_64_defconfig",
        "chatmail_zero2w_64_defconfig",
    ] {
        let text = std::fs::read_to_string(br.join("configs").join(name)).unwrap();
        assert!(text.contains("BR2_PACKAGE_CHATMAIL_RELAY=y"), "{name}");
        assert!(text.contains("BR2_INIT_BUSYBOX=y"), "{name}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((_, v)) = line.split_once('=') else {
                continue;
            };
            for word in v.trim_matches('"').split_whitespace() {
                if let Some(rest) = word.strip_prefix("$(BR2_EXTERNAL_CHATMAIL_PATH)/") {
                    let p = br.join(rest);
                    assert!(p.exists(), "{name}: {word} -> {}", p.display());
                    n += 1;
                }
            }
        }
    }
    assert!(n >= 4 * 6, "{n}");
}

#[test]
fn package_installs_what_inittab_starts() {
    let mk =
        std::fs::read_to_string(root().join("buildroot/package/chatmail-relay/chatmail-relay.mk"))
            .unwrap();
    let installed = "$(TARGET_DIR)/usr/bin/chatmail-box";
    assert!(mk.contains(installed));
    let inittab =
        std::fs::read_to_string(root().join("board/raspberrypi/rootfs-overlay/etc/inittab"))
            .unwrap();
    let respawn: Vec<&str> = inittab
        .lines()
        .filter(|l| l.contains(":respawn:"))
        .collect();
    assert!(
        respawn
            .iter()
            .any(|l| l.contains("-x /usr/bin/chatmail-box -n chatmail-box")),
        "{respawn:?}"
    );
    // The clock client is the same binary under its own name (S45clock and inittab use it).
    assert!(mk
        .contains("ln -f $(TARGET_DIR)/usr/bin/chatmail-box $(TARGET_DIR)/usr/bin/chatmail-clock"));
    assert!(respawn
        .iter()
        .any(|l| l.contains("/usr/bin/chatmail-clock clock")));
    // The default binary path is what make aarch64 produces.
    let cfg =
        std::fs::read_to_string(root().join("buildroot/package/chatmail-relay/Config.in")).unwrap();
    assert!(cfg.contains("target/cross/aarch64-unknown-linux-musl/release/chatmail-box.stripped"));
    let script = std::fs::read_to_string(root().join("scripts/aarch64.sh")).unwrap();
    assert!(script.contains("target/cross") && script.contains(".stripped"));
}

#[test]
fn board_files_exist_and_scripts_are_executable() {
    use std::os::unix::fs::PermissionsExt;
    let b = root().join("board/raspberrypi");
    for f in [
        "config.txt",
        "cmdline.txt",
        "genimage.cfg.in",
        "kernel.fragment",
    ] {
        assert!(b.join(f).is_file(), "{f}");
    }
    let cfg = std::fs::read_to_string(b.join("config.txt")).unwrap();
    assert!(cfg.contains("dtparam=i2c_arm=on") && cfg.contains("dtparam=spi=on"));
    let gi = std::fs::read_to_string(b.join("genimage.cfg.in")).unwrap();
    assert!(gi.contains("label = \"data\"") && gi.contains("rootfs.squashfs"));
    for f in [
        "post-build.sh",
        "post-image.sh",
        "rootfs-overlay/etc/init.d/S01logging",
        "rootfs-overlay/etc/init.d/S05datafs",
        "rootfs-overlay/etc/init.d/S45clock",
        "rootfs-overlay/etc/init.d/S50device",
    ] {
        let mode = std::fs::metadata(b.join(f)).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{f} not executable");
    }
}
