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

/// The host's time in whole seconds since the Unix epoch (`date +%s`), which kvm-unit-tests
/// passes `kvmclock_test` for its wall-clock check.
pub fn host_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The key of [`host_time`] in the guest environment.
pub const HOST_TIME: &str = "HOST_TIME";

/// The environment of a guest run under `accel`, as `KEY=VALUE` lines: `HOST_TIME` is the
/// host's time as the file is written, just before QEMU starts.
pub fn guest_environment(accel: Accel) -> String {
    let pairs = [
        ("ACCEL", accel.name().to_owned()),
        ("HOST_KERNEL", host_kernel()),
        ("HOST_KVM_MODULE", host_kvm_module().to_owned()),
        (HOST_TIME, host_time().to_string()),
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
        let seconds: u64 = lines[3].strip_prefix("HOST_TIME=").unwrap().parse().unwrap();
        // After 2020-01-01 and no later than now.
        assert!(seconds > 1_577_836_800 && seconds <= host_time());
        assert!(text.ends_with('\n'));
    }
}
