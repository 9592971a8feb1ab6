//! Build script shared by every guest test crate (`build = "../../lib/guest-build.rs"`).
//!
//! It links the test with the runtime's linker script (published by lib/build.rs through the
//! `links = "vmunit"` metadata) as a non-PIE image, which the 32-bit boot code needs.

fn main() {
    let script = std::env::var("DEP_VMUNIT_LINKER_SCRIPT")
        .expect("the test crate must depend on the vmunit crate, which provides the linker script");
    println!("cargo::rustc-link-arg-bins=-T{script}");
    println!("cargo::rustc-link-arg-bins=--no-pie");
    println!("cargo::rustc-link-arg-bins=-zmax-page-size=4096");
    // One read-write-execute segment, sections not page aligned: no padding in the file.
    println!("cargo::rustc-link-arg-bins=--omagic");
    println!("cargo::rerun-if-changed={script}");
}
