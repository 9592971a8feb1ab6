//! QEMU command lines: the per-architecture defaults and the assembly of one run's command.

use std::path::{Path, PathBuf};

use crate::config::{Accel, Arch};

/// How a guest's result reaches the runner, which decides how QEMU's exit status is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitMethod {
    /// The guest makes QEMU exit with the EXIT line's status (x86 isa-debug-exit, Arm
    /// semihosting): the two must agree.
    StatusDevice,
    /// The guest powers off (Arm PSCI SYSTEM_OFF): QEMU exits with 0 and the EXIT line alone
    /// carries the result.
    PowerOff,
    /// The guest exits through Arm semihosting when QEMU offers it (QEMU's status then equals
    /// the EXIT line's) and powers off otherwise (status 0; the EXIT line alone carries the
    /// result). A power-off without an EXIT line is never a pass.
    SemihostingOrPowerOff,
}

/// Where Debian's QEMU packages put qboot, the fast firmware used on pc/q35 when present.
pub const QBOOT_PATH: &str = "/usr/share/qemu/qboot.rom";
/// The fw_cfg file that carries the guest environment where `-initrd` cannot (aarch64 ELF).
pub const ENVIRONMENT_FW_CFG_NAME: &str = "opt/vmunit/environment";
/// Guest memory in MiB.
pub const MEMORY_MIB: u32 = 128;

/// How to run guests of one architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchProfile {
    /// The architecture.
    pub arch: Arch,
    /// The machine type used when neither the table nor `MACHINE` names one.
    pub default_machine: &'static str,
    /// Options that give the guest its way to report a result and make QEMU exit.
    pub exit_options: &'static [&'static str],
    /// How the guest's result shows in QEMU's exit.
    pub exit_method: ExitMethod,
    /// Whether qboot may be used (on machines `uses_qboot` accepts).
    pub qboot: bool,
    /// Whether the guest environment also goes into fw_cfg (as [`ENVIRONMENT_FW_CFG_NAME`]):
    /// QEMU's Arm `virt` loads `-initrd` only for Linux-image kernels, not for ELF ones.
    pub environment_in_fw_cfg: bool,
    /// The `-cpu` model under TCG.
    pub cpu_tcg: &'static str,
    /// The `-cpu` model under KVM.
    pub cpu_kvm: &'static str,
}

/// x86_64: microvm, qboot, isa-debug-exit. microvm (no PCI, no ACPI tables) boots twice as fast
/// as q35 under this project's software KVM (0.13 s against 0.25 s, BENCHMARKS.md); tests that
/// need PCI, ACPI or a richer topology name `machine = "q35"`.
pub const X86_64: ArchProfile = ArchProfile {
    arch: Arch::X86_64,
    default_machine: "microvm",
    exit_options: &["-device", "isa-debug-exit,iobase=0xf4,iosize=0x4"],
    exit_method: ExitMethod::StatusDevice,
    qboot: true,
    environment_in_fw_cfg: false,
    cpu_tcg: "max",
    // QEMU 10 aborts at start under some KVMs (software ones such as kvm_pvm) that refuse
    // IA32_ARCH_CAPABILITIES (MSR 0x10a), which `max` enables; a table can still pick its own
    // `-cpu` through qemu_params, which come later.
    cpu_kvm: "max,-arch-capabilities",
};

/// aarch64: virt with a GICv3 and semihosting for the exit status. Without semihosting (KVM
/// on an Arm host) the guest powers off through PSCI and its EXIT line carries the status.
pub const AARCH64: ArchProfile = ArchProfile {
    arch: Arch::Aarch64,
    default_machine: "virt,gic-version=3",
    exit_options: &["-semihosting"],
    exit_method: ExitMethod::SemihostingOrPowerOff,
    qboot: false,
    environment_in_fw_cfg: true,
    cpu_tcg: "max",
    cpu_kvm: "host",
};

impl ArchProfile {
    /// The profile of an architecture.
    pub fn of(arch: Arch) -> &'static ArchProfile {
        match arch {
            Arch::X86_64 => &X86_64,
            Arch::Aarch64 => &AARCH64,
        }
    }

    /// The `-cpu` model for an accelerator.
    pub fn cpu_model(&self, accel: Accel) -> &'static str {
        match accel {
            Accel::Kvm => self.cpu_kvm,
            Accel::Tcg => self.cpu_tcg,
        }
    }

    /// The QEMU binary's default name: `qemu-system-<arch>`.
    pub fn default_program(&self) -> String {
        format!("qemu-system-{}", self.arch.name())
    }
}

/// Whether a machine type is pc, q35 (including versioned names) or microvm, where qboot
/// boots PVH kernels: about 0.1 s faster than SeaBIOS under TCG, and seconds faster under a
/// software KVM (microvm's default firmware takes 8 s there).
pub fn uses_qboot(machine: &str) -> bool {
    matches!(machine, "pc" | "q35" | "microvm") || machine.starts_with("pc-")
}

/// A program and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuCommand {
    /// The QEMU binary (a name looked up in PATH, or a path).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

impl QemuCommand {
    /// The command shell-quoted, ready to paste into a shell.
    pub fn shell_line(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Quotes a word for a POSIX shell, leaving words of harmless characters as they are.
pub fn quote(word: &str) -> String {
    let harmless = |character: char| character.is_ascii_alphanumeric() || "_-+=/.,:@%".contains(character);
    if !word.is_empty() && word.chars().all(harmless) {
        return word.to_owned();
    }
    shlex::try_quote(word).map_or_else(|_| format!("{word:?}"), |quoted| quoted.into_owned())
}

/// Everything one run's command line depends on.
#[derive(Clone, Debug)]
pub struct LaunchSpec<'a> {
    /// How to run this architecture.
    pub profile: &'static ArchProfile,
    /// The QEMU binary.
    pub program: String,
    /// The machine type.
    pub machine: &'a str,
    /// The accelerator.
    pub accel: Accel,
    /// Its QEMU properties (`thread=multi`), if any.
    pub accel_properties: Option<&'a str>,
    /// CPU count.
    pub smp: u32,
    /// The guest image.
    pub image: &'a Path,
    /// The guest's arguments, joined by spaces into `-append`.
    pub test_args: &'a [String],
    /// The table's `qemu_params`.
    pub qemu_params: &'a [String],
    /// Arguments given after `--` on the runner's command line.
    pub extra_args: &'a [String],
    /// qboot's path, when it exists on this host.
    pub qboot: Option<PathBuf>,
    /// The guest environment file, passed as the initrd (see `environment.rs`).
    pub environment_file: Option<&'a Path>,
}

/// Builds the QEMU command line: the runner's defaults, then `qemu_params`, then the extra
/// arguments, so that later ones override earlier ones.
pub fn build_command(spec: &LaunchSpec<'_>) -> QemuCommand {
    let mut args: Vec<String> = [
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-machine",
        spec.machine,
    ]
    .map(str::to_owned)
    .to_vec();
    if let Some(qboot) = spec
        .qboot
        .as_ref()
        .filter(|_| spec.profile.qboot && uses_qboot(spec.machine))
    {
        args.extend(["-bios".to_owned(), qboot.display().to_string()]);
    }
    let accel = match spec.accel_properties {
        Some(properties) => format!("{},{properties}", spec.accel.name()),
        None => spec.accel.name().to_owned(),
    };
    args.extend(
        [
            "-accel",
            &accel,
            "-cpu",
            spec.profile.cpu_model(spec.accel),
            "-m",
            &MEMORY_MIB.to_string(),
            "-smp",
            &spec.smp.to_string(),
        ]
        .map(str::to_owned),
    );
    args.extend(
        spec.profile
            .exit_options
            .iter()
            .map(|option| (*option).to_owned()),
    );
    args.extend(["-serial", "stdio", "-kernel"].map(str::to_owned));
    args.push(spec.image.display().to_string());
    if !spec.test_args.is_empty() {
        args.extend(["-append".to_owned(), spec.test_args.join(" ")]);
    }
    if let Some(file) = spec.environment_file {
        args.extend(["-initrd".to_owned(), file.display().to_string()]);
        if spec.profile.environment_in_fw_cfg {
            // QEMU's option syntax escapes a comma in a value by doubling it.
            let path = file.display().to_string().replace(',', ",,");
            args.extend([
                "-fw_cfg".to_owned(),
                format!("name={ENVIRONMENT_FW_CFG_NAME},file={path}"),
            ]);
        }
    }
    args.extend(spec.qemu_params.iter().cloned());
    args.extend(spec.extra_args.iter().cloned());
    QemuCommand {
        program: spec.program.clone(),
        args,
    }
}

/// The device names `program -device help` lists, asked once per program and cached.
pub fn devices(program: &str) -> Result<std::collections::HashSet<String>, String> {
    type Cache = std::collections::HashMap<String, Result<std::collections::HashSet<String>, String>>;
    static CACHE: std::sync::Mutex<Option<Cache>> = std::sync::Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    cache
        .get_or_insert_with(Cache::new)
        .entry(program.to_owned())
        .or_insert_with(|| {
            let output = std::process::Command::new(program)
                .args(["-nodefaults", "-device", "help"])
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|error| format!("cannot run {program} -device help: {error}"))?;
            if !output.status.success() {
                return Err(format!("{program} -device help failed ({})", output.status));
            }
            Ok(parse_device_help(&String::from_utf8_lossy(&output.stdout)))
        })
        .clone()
}

/// The names in `-device help` output: lines such as `name "pci-testdev", bus PCI, desc "..."`.
pub fn parse_device_help(text: &str) -> std::collections::HashSet<String> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("name \""))
        .filter_map(|rest| rest.split_once('"').map(|(name, _)| name.to_owned()))
        .collect()
}

/// A CPU count no machine accepts, so that QEMU names its limit (kvm-unit-tests' probe asks
/// the same way).
pub const PROBE_SMP: u32 = 1_000_000;
/// A kernel path that does not exist, so that a probe that passes the checks stops at once.
const PROBE_KERNEL: &str = "/nonexistent/vmunit-probe-kernel";

/// The CPU limits QEMU reported for a machine and accelerator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmpLimits {
    /// "The max CPUs supported by machine '...' is N".
    pub machine: Option<u32>,
    /// "... exceeds the maximum cpus supported by KVM (N)".
    pub kvm_maximum: Option<u32>,
    /// "... exceeds the recommended cpus supported by KVM (N)" (a warning).
    pub kvm_recommended: Option<u32>,
}

impl SmpLimits {
    /// The most CPUs QEMU accepts: the smallest hard limit found.
    pub fn maximum(&self) -> Option<u32> {
        self.machine.into_iter().chain(self.kvm_maximum).min()
    }

    /// Adds the limits named in QEMU's messages.
    pub fn parse(&mut self, text: &str) {
        let number_in_parentheses = |line: &str| {
            let start = line.rfind('(')?;
            line[start + 1..].split(')').next()?.trim().parse().ok()
        };
        for line in text.lines() {
            if line.contains("max CPUs supported by machine") {
                self.machine = line.rsplit(' ').next().and_then(|last| last.trim().parse().ok());
            } else if line.contains("maximum cpus supported by KVM") {
                self.kvm_maximum = number_in_parentheses(line);
            } else if line.contains("recommended cpus supported by KVM") && self.kvm_recommended.is_none() {
                self.kvm_recommended = number_in_parentheses(line);
            }
        }
    }
}

/// Asks QEMU for the CPU limits of `machine` under `accel`: first with an absurd `-smp` for
/// the machine's limit, then under KVM with that limit for KVM's.
pub fn probe_smp_limits(
    program: &str,
    profile: &ArchProfile,
    machine: &str,
    accel: Accel,
) -> Result<SmpLimits, String> {
    let ask = |smp: u32| -> Result<String, String> {
        let output = std::process::Command::new(program)
            .args([
                "-nodefaults",
                "-display",
                "none",
                "-machine",
                machine,
                "-accel",
                accel.name(),
            ])
            .args([
                "-cpu",
                profile.cpu_model(accel),
                "-smp",
                &smp.to_string(),
                "-kernel",
                PROBE_KERNEL,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|error| format!("cannot run {program}: {error}"))?;
        Ok(String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let mut limits = SmpLimits::default();
    let first = ask(PROBE_SMP)?;
    limits.parse(&first);
    let Some(machine_limit) = limits.machine else {
        let reason = first
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("no message");
        return Err(format!(
            "{program} did not name the CPU limit of machine {machine}: {reason}"
        ));
    };
    if accel == Accel::Kvm {
        limits.parse(&ask(machine_limit)?);
    }
    Ok(limits)
}

/// The KVM device.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// The API version every KVM since Linux 2.6.22 reports (`KVM_API_VERSION`).
const KVM_API_VERSION: i32 = 12;

/// The one KVM ioctl the runner makes. The workspace denies unsafe code; an ioctl needs it.
#[allow(unsafe_code)]
mod kvm_ioctl {
    nix::ioctl_none_bad!(
        /// `KVM_GET_API_VERSION`, `_IO(KVMIO, 0x00)` with `KVMIO` = 0xAE.
        ///
        /// # Safety
        ///
        /// The descriptor must be open; the request takes no argument.
        kvm_get_api_version,
        nix::request_code_none!(0xAE, 0x00)
    );

    /// The API version the KVM device open at `device` reports.
    pub fn api_version(device: &std::fs::File) -> nix::Result<i32> {
        use std::os::fd::AsRawFd;
        // SAFETY: `device` is an open file for the whole call, and KVM_GET_API_VERSION takes
        // no argument and touches no memory of ours; a device that is not KVM refuses it
        // with an error (ENOTTY).
        unsafe { kvm_get_api_version(device.as_raw_fd()) }
    }
}

/// What probing a KVM device found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvmProbe {
    /// It is KVM: it opened and answered `KVM_GET_API_VERSION` with the stable API version.
    Usable,
    /// It cannot be opened for reading and writing (absent, or no permission).
    Unavailable,
    /// It opened but is not a working KVM, for this reason (a note for the user).
    NotKvm(String),
}

/// Probes the KVM device at `path`: opens it and asks its API version.
pub fn probe_kvm(path: &Path) -> KvmProbe {
    let Ok(device) = std::fs::OpenOptions::new().read(true).write(true).open(path) else {
        return KvmProbe::Unavailable;
    };
    match kvm_ioctl::api_version(&device) {
        Ok(KVM_API_VERSION) => KvmProbe::Usable,
        Ok(version) => KvmProbe::NotKvm(format!(
            "{} reports KVM API version {version}, not {KVM_API_VERSION}",
            path.display()
        )),
        Err(error) => KvmProbe::NotKvm(format!(
            "{} is not KVM: KVM_GET_API_VERSION failed: {}",
            path.display(),
            error.desc()
        )),
    }
}

/// Whether /dev/kvm is a usable KVM ([`probe_kvm`]); prints a note on stderr when it exists
/// but is not KVM, upon which the runner uses TCG.
pub fn kvm_usable() -> bool {
    match probe_kvm(Path::new(KVM_DEVICE)) {
        KvmProbe::Usable => true,
        KvmProbe::Unavailable => false,
        KvmProbe::NotKvm(reason) => {
            crate::eprintln!("vmunit: note: {reason}; using tcg");
            false
        }
    }
}

/// Whether `program --version` names QEMU (`QEMU emulator version ...`). Asked only when a run
/// ended with status 0 having printed nothing, to tell a guest that triple-faulted at once from
/// a program that is no QEMU (`QEMU=/bin/true`).
pub fn names_itself_qemu(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("QEMU"))
}

/// Whether `program` can be run: an existing file if it names a path, else found in PATH.
pub fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|directory| directory.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_that_is_not_kvm_is_not_usable() {
        // /dev/null opens for reading and writing, as a /dev/null bound over /dev/kvm would.
        let probe = probe_kvm(Path::new("/dev/null"));
        assert!(
            matches!(&probe, KvmProbe::NotKvm(reason) if reason.contains("KVM_GET_API_VERSION")),
            "{probe:?}"
        );
        assert_eq!(probe_kvm(Path::new("/nonexistent/kvm")), KvmProbe::Unavailable);
        if Path::new(KVM_DEVICE).exists() {
            let probe = probe_kvm(Path::new(KVM_DEVICE));
            assert!(!matches!(probe, KvmProbe::NotKvm(_)), "{probe:?}");
        }
    }

    fn spec<'a>(machine: &'a str, image: &'a Path) -> LaunchSpec<'a> {
        LaunchSpec {
            profile: &X86_64,
            program: "qemu-system-x86_64".into(),
            machine,
            accel: Accel::Tcg,
            accel_properties: None,
            smp: 1,
            image,
            test_args: &[],
            qemu_params: &[],
            extra_args: &[],
            qboot: Some(PathBuf::from(QBOOT_PATH)),
            environment_file: None,
        }
    }

    #[test]
    fn x86_defaults() {
        let image = Path::new("/w/target/x86_64-unknown-none/release/msr");
        let command = build_command(&spec("q35", image));
        assert_eq!(
            command.shell_line(),
            "qemu-system-x86_64 -nodefaults -display none -no-reboot -machine q35 -bios /usr/share/qemu/qboot.rom \
             -accel tcg -cpu max -m 128 -smp 1 -device isa-debug-exit,iobase=0xf4,iosize=0x4 -serial stdio \
             -kernel /w/target/x86_64-unknown-none/release/msr"
        );
    }

    #[test]
    fn accel_properties_follow_the_name() {
        let image = Path::new("guest");
        let mut with = spec("q35", image);
        with.accel_properties = Some("thread=multi");
        let command = build_command(&with);
        let at = command.args.iter().position(|word| word == "-accel").unwrap();
        assert_eq!(command.args[at + 1], "tcg,thread=multi");
    }

    #[test]
    fn qboot_only_on_pc_q35_and_microvm() {
        let image = Path::new("guest");
        for (machine, expected) in [
            ("q35", true),
            ("pc", true),
            ("pc-q35-10.0", true),
            ("microvm", true),
            ("isapc", false),
        ] {
            let command = build_command(&spec(machine, image));
            assert_eq!(command.args.contains(&"-bios".to_owned()), expected, "{machine}");
        }
        let mut without = spec("q35", image);
        without.qboot = None;
        assert!(!build_command(&without).args.contains(&"-bios".to_owned()));
        let mut arm = spec("virt", image);
        arm.profile = &AARCH64;
        let command = build_command(&arm);
        assert!(!command.args.contains(&"-bios".to_owned()));
        assert!(command.args.contains(&"-semihosting".to_owned()));
        assert!(!command.args.iter().any(|arg| arg.contains("isa-debug-exit")));
    }

    #[test]
    fn order_of_user_arguments() {
        let image = Path::new("guest");
        let test_args = ["selftest-arg1".to_owned(), "key=value".to_owned()];
        let qemu_params = ["-m".to_owned(), "256".to_owned()];
        let extra = ["-d".to_owned(), "int".to_owned()];
        let mut spec = spec("q35", image);
        spec.accel = Accel::Kvm;
        spec.smp = 4;
        spec.test_args = &test_args;
        spec.qemu_params = &qemu_params;
        spec.extra_args = &extra;
        let command = build_command(&spec);
        let tail: Vec<&str> = command.args.iter().map(String::as_str).rev().take(8).collect();
        assert_eq!(
            tail,
            [
                "int",
                "-d",
                "256",
                "-m",
                "selftest-arg1 key=value",
                "-append",
                "guest",
                "-kernel"
            ]
        );
        let position = |word: &str| command.args.iter().position(|arg| arg == word).unwrap();
        assert!(position("-m") < position("256") && position("256") < position("-append") + 10);
        assert_eq!(command.args[position("-accel") + 1], "kvm");
        assert_eq!(command.args[position("-cpu") + 1], "max,-arch-capabilities");
        assert_eq!(command.args[position("-smp") + 1], "4");
        assert!(command.shell_line().contains("-append 'selftest-arg1 key=value'"));
    }

    #[test]
    fn aarch64_defaults() {
        let image = Path::new("/w/target/aarch64-unknown-none/release/timer");
        let mut arm = spec(AARCH64.default_machine, image);
        arm.profile = &AARCH64;
        arm.program = "qemu-system-aarch64".into();
        assert_eq!(
            build_command(&arm).shell_line(),
            "qemu-system-aarch64 -nodefaults -display none -no-reboot -machine virt,gic-version=3 \
             -accel tcg -cpu max -m 128 -smp 1 -semihosting -serial stdio \
             -kernel /w/target/aarch64-unknown-none/release/timer"
        );
        assert_eq!(AARCH64.cpu_model(Accel::Kvm), "host");
        let environment = Path::new("/logs/a,b.environment");
        arm.environment_file = Some(environment);
        assert!(build_command(&arm).shell_line().ends_with(
            "-initrd /logs/a,b.environment -fw_cfg name=opt/vmunit/environment,file=/logs/a,,b.environment"
        ));
        assert_eq!(AARCH64.exit_method, ExitMethod::SemihostingOrPowerOff);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("isa-debug-exit,iobase=0xf4"), "isa-debug-exit,iobase=0xf4");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), "\"it's\"");
    }

    #[test]
    fn no_append_without_arguments() {
        assert!(
            !build_command(&spec("q35", Path::new("g")))
                .args
                .contains(&"-append".to_owned())
        );
    }

    #[test]
    fn device_help() {
        let listed = parse_device_help(
            "Misc devices:\nname \"pci-testdev\", bus PCI, desc \"PCI Test Device\"\nname \"isa-debug-exit\", bus ISA\n",
        );
        assert!(listed.contains("pci-testdev") && listed.contains("isa-debug-exit"));
        assert_eq!(listed.len(), 2);
        assert!(devices("/nonexistent/qemu").is_err());
    }

    #[test]
    fn smp_limit_messages() {
        let mut limits = SmpLimits::default();
        limits.parse("qemu-system-x86_64: Invalid SMP CPUs 1000000. The max CPUs supported by machine 'pc-q35-10.0' is 4096\n");
        assert_eq!(limits.machine, Some(4096));
        assert_eq!(limits.maximum(), Some(4096));
        limits.parse(
            "qemu-system-x86_64: -accel kvm: warning: Number of SMP cpus requested (4096) exceeds the recommended cpus supported by KVM (2)\n\
             qemu-system-x86_64: -accel kvm: Number of SMP cpus requested (4096) exceeds the maximum cpus supported by KVM (1024)\n",
        );
        assert_eq!(
            limits,
            SmpLimits {
                machine: Some(4096),
                kvm_maximum: Some(1024),
                kvm_recommended: Some(2)
            }
        );
        assert_eq!(limits.maximum(), Some(1024));
        assert_eq!(SmpLimits::default().maximum(), None);
    }

    #[test]
    fn program_lookup() {
        assert!(program_exists("sh"));
        assert!(program_exists("/bin/sh"));
        assert!(!program_exists("/nonexistent/qemu"));
        assert!(!program_exists("qemu-system-does-not-exist"));
    }
}
