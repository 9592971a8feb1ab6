//! Build script of the vmunit runtime: puts the guest architecture's linker script on the link
//! search path of every crate that depends on vmunit.
//!
//! Only a binary's own package may pass link arguments, but link search paths propagate to
//! dependents: the guest targets' rustflags in the workspace's .cargo/config.toml link every
//! test with `-Tlink.ld`, which the linker finds in the directory named here. A RUSTFLAGS
//! environment variable replaces those rustflags; the build stops with advice when it did.

use std::env;
use std::path::PathBuf;

/// The flag of .cargo/config.toml that selects the linker script.
const LINKER_SCRIPT_FLAG: &str = "-Clink-arg=-Tlink.ld";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let directory = manifest.join("src/arch").join(&arch);
    let script = directory.join("link.ld");
    println!("cargo::rerun-if-changed={}", script.display());
    println!("cargo::rerun-if-env-changed=RUSTFLAGS");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        // The host build (unit tests) links nothing of the guest's.
        return;
    }
    println!("cargo::rustc-link-search=native={}", directory.display());
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if !flags.split('\x1f').any(|flag| flag == LINKER_SCRIPT_FLAG) {
        let target = env::var("TARGET").unwrap_or_default();
        println!(
            "cargo::error=the guest's link flags ({LINKER_SCRIPT_FLAG} and others, from \
             [target.{target}] rustflags in the workspace's .cargo/config.toml) are missing: a \
             RUSTFLAGS or CARGO_TARGET_*_RUSTFLAGS environment variable replaces them. Unset it \
             and add flags with `cargo --config 'target.{target}.rustflags = [\"...\"]'`, which \
             appends to them."
        );
    }
}
