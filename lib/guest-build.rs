//! Former build script of guest test crates, kept so that a crate still naming it
//! (`build = "../../lib/guest-build.rs"`) builds: the link setup it did now comes from the
//! workspace's .cargo/config.toml and lib/build.rs, so it only asks for the line's removal.

fn main() {
    println!(
        "cargo::warning=`build = \"../../lib/guest-build.rs\"` is no longer needed: remove it from {}/Cargo.toml",
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()
    );
}
