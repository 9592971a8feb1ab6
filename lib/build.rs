//! Build script of the vmunit runtime: publishes the linker script for the guest's architecture.
//!
//! Test crates read it back as `DEP_VMUNIT_LINKER_SCRIPT` in their build script
//! (`lib/guest-build.rs`), because only a binary's own package may pass link arguments.

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let script = manifest.join("src/arch").join(&arch).join("link.ld");
    println!("cargo::rerun-if-changed={}", script.display());
    println!("cargo::metadata=linker_script={}", script.display());
}
