//! The plan stage: which runs the selection names ([`Plan`]), and what happens to each
//! ([`Decision`]): run it, skip it and why, or leave it out (nodefault). Shards and
//! `--rerun-failed` narrow the selection here. Nothing is built or booted.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::config::{self, Accel, Arch, Config, KvmModule, Migrate, Requirement, TestEntry};
use crate::error::AppError;
use crate::options::{Kernel, Options, Shard, qemu_program};
use crate::qemu::{self, ArchProfile};
use crate::select::{Choice, Selection};
use crate::workspace;

/// What to do with one selected run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Report it as skipped, for this reason.
    Skip(String),
    /// nodefault and not asked for: mention only with -v.
    Nodefault,
    /// Run it.
    Run {
        /// The guest's architecture.
        arch: Arch,
        /// The accelerator it runs under.
        accel: Accel,
    },
}

/// Why a nodefault run is reported as skipped with -v.
pub const NODEFAULT_REASON: &str = "test marked as manual run only";

impl Decision {
    /// The skip a decision not to run is reported as; `None` when nothing is reported (a
    /// nodefault run without -v) or the run runs.
    pub fn skip_reason(&self, verbose: bool) -> Option<String> {
        match self {
            Decision::Skip(reason) => Some(reason.clone()),
            Decision::Nodefault if verbose => Some(NODEFAULT_REASON.to_owned()),
            Decision::Nodefault | Decision::Run { .. } => None,
        }
    }
}

/// One selected unittests.toml entry and its decision.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// The entry (for `--kernel`, the entry of the same name or an ad-hoc one).
    pub entry: TestEntry,
    /// Named by the user (not by a glob, a group or `--rerun-failed`).
    pub explicit: bool,
    /// What happens to it.
    pub decision: Decision,
}

/// The plan of an invocation: its runs in unittests.toml order.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The configuration the runs come from.
    pub config: Config,
    /// The selected runs.
    pub runs: Vec<PlannedRun>,
}

/// Whether /dev/kvm is a usable KVM, asked once per invocation.
pub(crate) fn kvm_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(qemu::kvm_usable)
}

/// The accelerator a guest of `arch` runs with: the one asked for, else kvm when the guest
/// matches the host and /dev/kvm is usable, else tcg.
pub fn current_accel(requested: Option<Accel>, arch: Option<Arch>) -> Accel {
    requested.unwrap_or_else(|| {
        let native = arch.or_else(Arch::host) == Arch::host();
        if native && kvm_usable() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    })
}

/// Loads the config and decides what happens to each selected run (before building).
/// `failed_last_time` names the runs that failed last time, for `--rerun-failed`.
pub fn plan(options: &Options, failed_last_time: Option<Vec<String>>) -> Result<Plan, AppError> {
    let config = Config::load(&options.config)?;
    if let Some(kernel) = &options.kernel {
        let runs = vec![plan_kernel(options, &config, kernel)];
        return Ok(Plan { config, runs });
    }
    let mut selection = options.selection.clone();
    if let Some(failed) = failed_last_time {
        if failed.is_empty() {
            return Ok(Plan {
                config,
                runs: Vec::new(),
            });
        }
        let present: Vec<String> = failed
            .iter()
            .filter(|name| config.entries.iter().any(|entry| entry.name == **name))
            .cloned()
            .collect();
        if present.is_empty() && !options.allow_empty {
            return Err(AppError::Usage(format!(
                "--rerun-failed: none of the runs that failed last time ({}) is in {} any more; \
                 --allow-empty accepts that",
                failed.join(", "),
                workspace::shown(&config.path)
            )));
        }
        if present.is_empty() {
            return Ok(Plan {
                config,
                runs: Vec::new(),
            });
        }
        selection.names = present.iter().map(|name| glob::Pattern::escape(name)).collect();
        selection.all = true;
    }
    let choices = selection.choose(&config.entries)?;
    let mut planned = Vec::new();
    // Where each crate lives, looked up once: a few hundred runs share a few dozen crates.
    let mut crate_arches: HashMap<&str, Option<Arch>> = HashMap::new();
    for (entry, choice) in config.entries.iter().zip(choices) {
        // Every entry's crate and arch are checked, so a wrong one is found whatever is selected.
        let found = *crate_arches
            .entry(entry.file.as_str())
            .or_insert_with(|| config::crate_arch(&options.workspace, &entry.file));
        let arch = entry.check_arch(found, &config)?;
        let explicit = match choice {
            Choice::Excluded => continue,
            Choice::Nodefault => {
                planned.push(PlannedRun {
                    entry: entry.clone(),
                    explicit: false,
                    decision: Decision::Nodefault,
                });
                continue;
            }
            // Runs chosen by --rerun-failed are not named by the user: no interactive mode.
            Choice::Selected { explicit } => explicit && !options.rerun_failed,
        };
        let accel = current_accel(options.accel, Some(arch));
        let rules = skip_rules(entry, Some(machine_for(options, entry, arch)));
        let decision = if options.arch.is_some_and(|wanted| wanted != arch) {
            Decision::Skip(format!("{arch} only"))
        } else if let Some(reason) = rules.iter().find_map(|rule| rule.skips_here(accel)) {
            Decision::Skip(reason)
        } else if let Some(reason) = options.migrate.and_then(|_| unmigratable(entry)) {
            Decision::Skip(reason)
        } else {
            Decision::Run { arch, accel }
        };
        planned.push(PlannedRun {
            entry: entry.clone(),
            explicit,
            decision,
        });
    }
    // A selection that matches nothing runs nothing: an error unless asked for (before the
    // shard, whose part of a selection may well be empty).
    if planned.iter().all(|item| item.decision == Decision::Nodefault) && !options.allow_empty {
        return Err(AppError::Usage(format!(
            "no test selected: {} matches nothing in {}; --allow-empty accepts an empty run",
            describe_selection(&selection),
            workspace::shown(&config.path)
        )));
    }
    if let Some(shard) = options.shard {
        planned = shard.select(planned, |item| matches!(item.decision, Decision::Nodefault));
    }
    Ok(Plan {
        config,
        runs: planned,
    })
}

/// The selection in the words of the command line, for the message that it matches nothing.
fn describe_selection(selection: &Selection) -> String {
    let mut words: Vec<String> = selection.names.iter().map(|name| qemu::quote(name)).collect();
    words.extend(
        selection
            .groups
            .iter()
            .map(|group| format!("-g {}", qemu::quote(group))),
    );
    if selection.all {
        words.push("-a".to_owned());
    }
    if words.is_empty() {
        "the default selection".to_owned()
    } else {
        format!("the selection {}", words.join(" "))
    }
}

/// Shards are the plan's business: the options only carry the choice.
impl Shard {
    /// Keeps this shard's items. Items `quiet` says are not reported (nodefault runs, shown
    /// only with -v) do not count, and stay in shard 1 only, so every shard reports a disjoint
    /// part and together they report everything once.
    pub fn select<T>(self, items: Vec<T>, quiet: impl Fn(&T) -> bool) -> Vec<T> {
        let mut position = 0;
        items
            .into_iter()
            .filter(|item| {
                if quiet(item) {
                    return self.index == 1;
                }
                position += 1;
                (position - 1) % self.count == self.index - 1
            })
            .collect()
    }
}

/// The one run of `--kernel`: the unittests.toml entry of the same name supplies smp,
/// qemu_params, test_args and the rest when there is one.
fn plan_kernel(options: &Options, config: &Config, kernel: &Kernel) -> PlannedRun {
    let name = kernel.name();
    let mut entry = config
        .entries
        .iter()
        .find(|entry| entry.name == name)
        .cloned()
        .unwrap_or_else(|| TestEntry::ad_hoc(&name));
    if let Some(append) = &kernel.append {
        entry.test_args = append.split_whitespace().map(str::to_owned).collect();
    }
    let accel = current_accel(options.accel, Some(kernel.arch));
    let decision = match options.migrate.and_then(|_| unmigratable(&entry)) {
        Some(reason) => Decision::Skip(reason),
        None => Decision::Run {
            arch: kernel.arch,
            accel,
        },
    };
    PlannedRun {
        entry,
        explicit: true,
        decision,
    }
}

/// QEMU's test devices that register no migration state (no `vmsd` in their class, read in
/// QEMU's source) and whose state is what a test programs: a PCI device's config space (its
/// Command register and BARs), hyperv-testdev's SINT routes. It does not reach the
/// destination, so a run that uses one cannot be migrated at an arbitrary point. Each with the
/// file that shows it. (pc-testdev has no `vmsd` either, but most of its uses hold no state:
/// its IRQ lines' levels live in the interrupt controllers, which migrate; the runs that keep
/// data in its buffer say `migrate = "why"` in unittests.toml.)
pub const UNMIGRATED_DEVICES: [(&str, &str); 3] = [
    ("pci-testdev", "hw/misc/pci-testdev.c"),
    ("edu", "hw/misc/edu.c"),
    ("hyperv-testdev", "hw/misc/hyperv_testdev.c"),
];

/// Why `--migrate` cannot migrate `entry`, if it cannot: the run says `migrate = false` (or
/// gives the reason), it has an `expect` script (the migration run does not drive a console
/// script), or its `qemu_params` add a device QEMU does not migrate ([`UNMIGRATED_DEVICES`]).
/// A migration run migrates on its own requests and is never ruled out.
pub fn unmigratable(entry: &TestEntry) -> Option<String> {
    if entry.is_migration_run() {
        return None;
    }
    let why = match &entry.migrate {
        Migrate::Never(Some(reason)) => Some(reason.clone()),
        Migrate::Never(None) => Some("migrate = false".to_owned()),
        _ if !entry.expect.is_empty() => {
            Some("its expect script drives the console, which a migrated run does not".to_owned())
        }
        _ => entry
            .qemu_params
            .windows(2)
            .filter(|pair| pair[0] == "-device")
            .find_map(|pair| {
                let device = pair[1].split(',').next().unwrap_or_default();
                UNMIGRATED_DEVICES
                    .iter()
                    .find(|(name, _)| *name == device)
                    .map(|(name, source)| {
                        format!(
                            "QEMU does not migrate the state of -device {name} ({source} registers \
                             no VMState)"
                        )
                    })
            }),
    };
    why.map(|why| format!("--migrate: cannot migrate: {why}"))
}

/// One unittests.toml entry as a test case of the libtest harness (runner/tests/guests.rs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// The run's name.
    pub name: String,
    /// Why it would be skipped, decided without booting anything (arch, accel, disabled,
    /// requires, missing crate; devices ask QEMU once); `None` when it would run.
    pub skip: Option<String>,
    /// In group nodefault: run only when asked for by name.
    pub nodefault: bool,
}

/// Every entry of the config as a case, in file order, cheaply (nothing is built or booted).
pub fn cases(options: &Options) -> Result<Vec<Case>, AppError> {
    let mut everything = options.clone();
    everything.selection = Selection {
        all: true,
        ..Selection::default()
    };
    everything.shard = None;
    everything.rerun_failed = false;
    everything.allow_empty = true;
    let plan = plan(&everything, None)?;
    Ok(plan
        .runs
        .into_iter()
        .map(|item| Case {
            nodefault: item.entry.in_group(crate::select::NODEFAULT_GROUP),
            skip: match item.decision {
                Decision::Skip(reason) => Some(reason),
                // Devices too, so that a harness that cannot skip at run time lists them.
                Decision::Run { arch, .. } => {
                    unmet_device_requirement(&item.entry.requires, &qemu_program(&options.environment, arch))
                }
                Decision::Nodefault => None,
            },
            name: item.entry.name,
        })
        .collect())
}

/// The machine type of a run: `MACHINE`, else the table's, else the architecture's default.
pub fn machine_for<'a>(options: &'a Options, entry: &'a TestEntry, arch: Arch) -> &'a str {
    options
        .environment
        .machine
        .as_deref()
        .or(entry.machine.as_deref())
        .unwrap_or(ArchProfile::of(arch).default_machine)
}

/// A reason to skip a run, as data: the plan tests it on this host ([`SkipRule::skips_here`]),
/// a standalone script tests it where it runs. In the order they are tested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipRule {
    /// Always skipped, for this reason: `disabled`, or a `disabled_if` that names only the
    /// run's machine.
    Always(String),
    /// Skipped under this accelerator, for this reason: a `disabled_if` naming it (and the
    /// run's machine, if any).
    UnderAccel {
        /// The accelerator.
        accel: Accel,
        /// Why.
        reason: String,
    },
    /// Skipped under kvm when the host's KVM module is this one, for this reason: a
    /// `disabled_if` naming `kvm_module` (and the run's machine, if any).
    UnderKvmModule {
        /// The module.
        module: KvmModule,
        /// Why.
        reason: String,
    },
    /// Runs only under this accelerator (the entry's `accel`).
    OnlyUnder(Accel),
    /// `requires = ["kvm"]`: the accelerator is kvm and /dev/kvm is usable.
    Kvm,
    /// `requires = ["root"]`: the runner runs as root.
    Root,
    /// `requires = ["device:NAME"]`: QEMU offers the device (asked just before the run).
    Device(String),
}

/// The skip rules of `entry` on `machine` (unknown when its crate is missing: then
/// `disabled_if` cannot be decided and is left out).
pub fn skip_rules(entry: &TestEntry, machine: Option<&str>) -> Vec<SkipRule> {
    let mut rules = Vec::new();
    if let Some(reason) = &entry.disabled {
        rules.push(SkipRule::Always(format!("disabled: {reason}")));
    }
    for condition in &entry.disabled_if {
        let Some(machine) = machine else {
            break;
        };
        if condition
            .machine
            .as_deref()
            .is_some_and(|wanted| wanted != machine)
        {
            continue;
        }
        let reason = format!("disabled if {condition}");
        rules.push(match (condition.kvm_module, condition.accel) {
            (Some(module), _) => SkipRule::UnderKvmModule { module, reason },
            (None, Some(accel)) => SkipRule::UnderAccel { accel, reason },
            (None, None) => SkipRule::Always(reason),
        });
    }
    if let Some(only) = entry.accel {
        rules.push(SkipRule::OnlyUnder(only));
    }
    rules.extend(entry.requires.iter().map(|requirement| match requirement {
        Requirement::Kvm => SkipRule::Kvm,
        Requirement::Root => SkipRule::Root,
        Requirement::Device(device) => SkipRule::Device(device.clone()),
    }));
    rules
}

impl SkipRule {
    /// Why the rule skips a run under `accel` on this host, if it does. Device rules need QEMU
    /// and are tested just before the run ([`unmet_device_requirement`]).
    pub fn skips_here(&self, accel: Accel) -> Option<String> {
        match self {
            SkipRule::Always(reason) => Some(reason.clone()),
            SkipRule::UnderAccel { accel: under, reason } if *under == accel => Some(reason.clone()),
            SkipRule::UnderKvmModule { module, reason }
                if accel == Accel::Kvm && module.name() == crate::environment::host_kvm_module() =>
            {
                Some(reason.clone())
            }
            SkipRule::OnlyUnder(only) if *only != accel => Some(format!("{only} only, but ACCEL={accel}")),
            SkipRule::Kvm if accel != Accel::Kvm => Some(format!("requires kvm, but ACCEL={accel}")),
            SkipRule::Kvm if !kvm_usable() => Some("requires kvm, but /dev/kvm is not usable".to_owned()),
            SkipRule::Root if !nix::unistd::geteuid().is_root() => {
                Some("requires root, but the runner is not root".to_owned())
            }
            _ => None,
        }
    }
}

/// The first device of `requires` that `program` lacks, as a skip reason. QEMU is asked once
/// per program and run (`-device help`).
pub fn unmet_device_requirement(requires: &[Requirement], program: &str) -> Option<String> {
    requires.iter().find_map(|requirement| {
        let Requirement::Device(device) = requirement else {
            return None;
        };
        match qemu::devices(program) {
            Ok(devices) if devices.contains(device) => None,
            Ok(_) => Some(format!("requires device {device}, which {program} lacks")),
            Err(error) => Some(format!("requires device {device}, but {error}")),
        }
    })
}

/// A run whose image is missing is skipped: the reason, when `image` is not a file.
pub fn unmet_image(image: &std::path::Path) -> Option<String> {
    (!image.is_file()).then(|| format!("Test file '{}' not found", workspace::shown(image)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitStatus;

    fn workspace_with(config: &str) -> (tempfile::TempDir, Options) {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        std::fs::write(root.join("unittests.toml"), config).unwrap();
        std::fs::write(root.join("Cargo.toml"), "").unwrap();
        std::fs::create_dir_all(root.join("tests-x86/xguest")).unwrap();
        let mut options = Options::new(root);
        options.build = false;
        (directory, options)
    }

    fn decisions(options: &Options) -> Vec<(String, String)> {
        plan(options, None)
            .unwrap()
            .runs
            .into_iter()
            .map(|planned| (planned.entry.name, format!("{:?}", planned.decision)))
            .collect()
    }

    #[test]
    fn skip_rules_in_order() {
        let config = Config::parse(
            std::path::Path::new("unittests.toml"),
            "[t]\nfile = \"x\"\ndisabled_if = { accel = \"tcg\", machine = \"q35\" }\naccel = \"kvm\"\n\
             requires = [\"root\", \"device:pci-testdev\", \"kvm\"]\n"
                .to_owned(),
        )
        .unwrap();
        let entry = &config.entries[0];
        let rules = skip_rules(entry, Some("q35"));
        assert_eq!(
            rules,
            [
                SkipRule::UnderAccel {
                    accel: Accel::Tcg,
                    reason: "disabled if accel = tcg and machine = q35".into()
                },
                SkipRule::OnlyUnder(Accel::Kvm),
                SkipRule::Root,
                SkipRule::Device("pci-testdev".into()),
                SkipRule::Kvm,
            ]
        );
        assert_eq!(skip_rules(entry, Some("microvm")).len(), 4);
        assert_eq!(skip_rules(entry, None).len(), 4);
        assert_eq!(
            rules[0].skips_here(Accel::Tcg).as_deref(),
            Some("disabled if accel = tcg and machine = q35")
        );
        assert_eq!(rules[0].skips_here(Accel::Kvm), None);
        assert_eq!(
            rules[1].skips_here(Accel::Tcg).as_deref(),
            Some("kvm only, but ACCEL=tcg")
        );
        assert_eq!(rules[3].skips_here(Accel::Tcg), None);
    }

    /// A `disabled_if` on the host's KVM module is decided before boot: under kvm on a host
    /// with that module only.
    #[test]
    fn kvm_module_errata_skip_before_boot() {
        let config = Config::parse(
            std::path::Path::new("unittests.toml"),
            "[t]\nfile = \"x\"\ndisabled_if = { kvm_module = \"kvm_pvm\" }\n".to_owned(),
        )
        .unwrap();
        let rules = skip_rules(&config.entries[0], Some("microvm"));
        let reason = "disabled if kvm_module = kvm_pvm";
        assert_eq!(
            rules,
            [SkipRule::UnderKvmModule {
                module: KvmModule::KvmPvm,
                reason: reason.into()
            }]
        );
        assert_eq!(rules[0].skips_here(Accel::Tcg), None);
        let on_kvm_pvm = crate::environment::host_kvm_module() == "kvm_pvm";
        assert_eq!(
            rules[0].skips_here(Accel::Kvm).as_deref(),
            on_kvm_pvm.then_some(reason)
        );
    }

    #[test]
    fn disabled_and_required() {
        let (_directory, mut options) = workspace_with(
            r#"
    [off]
    file = "xguest"
    disabled = "flaky"
    [off-tcg]
    file = "xguest"
    disabled_if = { accel = "tcg" }
    [off-kvm]
    file = "xguest"
    disabled_if = { accel = "kvm" }
    [off-microvm]
    file = "xguest"
    disabled_if = { machine = "microvm" }
    [needs-kvm]
    file = "xguest"
    requires = ["kvm"]
    [needs-device]
    file = "xguest"
    requires = ["device:pci-testdev"]
    "#,
        );
        options.accel = Some(Accel::Tcg);
        // On q35 first: the x86 default, microvm, is what off-microvm names.
        options.environment.machine = Some("q35".into());
        let first = decisions(&options);
        let run = "Run { arch: X86_64, accel: Tcg }";
        assert_eq!(first[0].1, "Skip(\"disabled: flaky\")");
        assert_eq!(first[1].1, "Skip(\"disabled if accel = tcg\")");
        assert_eq!(first[2].1, run);
        assert_eq!(first[3].1, run);
        assert_eq!(first[4].1, "Skip(\"requires kvm, but ACCEL=tcg\")");
        // Devices are checked against QEMU just before the run, not while planning.
        assert_eq!(first[5].1, run);
        options.environment.machine = Some("microvm".into());
        assert_eq!(
            decisions(&options)[3].1,
            "Skip(\"disabled if machine = microvm\")"
        );
    }

    #[test]
    fn shards() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["0/3", "4/3", "1", "a/b", "1/0", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let items: Vec<i32> = (1..=8).collect();
        let quiet = |item: &i32| *item == 4;
        let parts: Vec<Vec<i32>> = (1..=3)
            .map(|index| Shard { index, count: 3 }.select(items.clone(), quiet))
            .collect();
        assert_eq!(parts, [vec![1, 4, 5, 8], vec![2, 6], vec![3, 7]]);
    }

    #[test]
    fn cases_for_the_harness() {
        let (_directory, mut options) = workspace_with(
            "[x]\nfile = \"xguest\"\n[off]\nfile = \"xguest\"\ndisabled = \"no\"\n\
             [manual]\nfile = \"xguest\"\ngroups = [\"nodefault\"]\n",
        );
        options.accel = Some(Accel::Tcg);
        options.selection.names = vec!["x".into()];
        let cases = cases(&options).unwrap();
        let case = |name: &str, skip: Option<&str>, nodefault: bool| Case {
            name: name.into(),
            skip: skip.map(str::to_owned),
            nodefault,
        };
        assert_eq!(
            cases,
            [
                case("x", None, false),
                case("off", Some("disabled: no"), false),
                case("manual", None, true)
            ]
        );
    }

    /// `--migrate` skips, before boot and saying why, the runs it cannot migrate: `migrate =
    /// false` or a reason, an expect script, a device QEMU does not migrate; never a
    /// migration run, and nothing without `--migrate`.
    #[test]
    fn unmigratable_runs_skip_under_migrate() {
        let (_directory, mut options) = workspace_with(
            "[plain]\nfile = \"xguest\"\n\
             [off]\nfile = \"xguest\"\nmigrate = false\n\
             [why]\nfile = \"xguest\"\nmigrate = \"a reason\"\n\
             [device]\nfile = \"xguest\"\nqemu_params = \"-device pci-testdev,membar=2M\"\n\
             [isa]\nfile = \"xguest\"\nqemu_params = \"-device isa-debug-exit\"\n\
             [scripted]\nfile = \"xguest\"\nexpect = [{ send = \"x\" }]\n\
             [own]\nfile = \"xguest\"\nqemu_params = \"-device pc-testdev\"\ngroups = [\"migration\"]\n",
        );
        options.accel = Some(Accel::Tcg);
        let run = "Run { arch: X86_64, accel: Tcg }";
        assert!(decisions(&options).iter().all(|(_, decision)| decision == run));
        options.migrate = Some(1);
        let skip = |why: &str| format!("Skip(\"--migrate: cannot migrate: {why}\")");
        let decided = decisions(&options);
        assert_eq!(decided[0].1, run);
        assert_eq!(decided[1].1, skip("migrate = false"));
        assert_eq!(decided[2].1, skip("a reason"));
        assert_eq!(
            decided[3].1,
            skip(
                "QEMU does not migrate the state of -device pci-testdev (hw/misc/pci-testdev.c registers no VMState)"
            )
        );
        assert_eq!(decided[4].1, run);
        assert!(
            decided[5].1.starts_with(&skip("its expect script")[..40]),
            "{}",
            decided[5].1
        );
        assert_eq!(decided[6].1, run);
    }

    #[test]
    fn arch_mismatch_is_a_config_error() {
        let (_directory, options) =
            workspace_with("[ok]\nfile = \"xguest\"\n[bad]\nfile = \"xguest\"\narch = \"aarch64\"\n");
        let error = plan(&options, None).unwrap_err();
        assert!(matches!(error, AppError::Config(_)));
        assert_eq!(error.exit_status(), ExitStatus::UsageOrConfigError);
        assert!(error.to_string().contains(":5:8: [bad] arch:"), "{error}");
    }
}
