//! The guest's environment: KEY=VALUE lines the runner hands to every guest as its initrd,
//! as kvm-unit-tests does, so a test can tell precisely which host and accelerator it runs on
//! (the runtime offers `vmunit::env("KEY")`).

use std::path::Path;

use crate::config::Accel;

/// The host's KVM module: kvm_intel, kvm_amd, kvm_pvm (a software KVM), or none.
pub fn host_kvm_module() -> &'static str {
    ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .find(|module| Path::new("/sys/module").join(module).is_dir())
        .unwrap_or("none")
}

/// The host's kernel release (`uname -r`).
pub fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The environment of a guest run under `accel`, as `KEY=VALUE` lines.
pub fn guest_environment(accel: Accel) -> String {
    let pairs = [
        ("ACCEL", accel.name().to_owned()),
        ("HOST_KERNEL", host_kernel()),
        ("HOST_KVM_MODULE", host_kvm_module().to_owned()),
    ];
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names_the_accelerator_and_host() {
        let text = guest_environment(Accel::Tcg);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ACCEL=tcg");
        assert!(lines[1].starts_with("HOST_KERNEL=") && lines[1].len() > "HOST_KERNEL=".len());
        assert!(lines[2].starts_with("HOST_KVM_MODULE="));
        assert!(text.ends_with('\n'));
    }
}
