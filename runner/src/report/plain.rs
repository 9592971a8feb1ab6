//! The plain format: one kvm-unit-tests-style line per run (coloured on a terminal), a live
//! progress line, the slowest runs and the totals.

use std::collections::BTreeMap;
use std::io::Write;

use crate::classify::{TestResult, Verdict};
use crate::config::Accel;
use crate::options::Options;
use crate::qemu::quote;
use crate::report::{Event, Reporter, display_line, interrupted_line, slowest_line};
use crate::workspace::shown;

/// The `./run_tests` command line that reproduces one run of this invocation alone: the same
/// environment variables, accelerator (the one the run used), configuration, guest variables,
/// `--kernel`/`--append` and extra QEMU arguments.
#[derive(Clone, Debug, Default)]
pub struct Reproduce {
    /// `VAR=value` words and the program.
    prefix: String,
    /// `--kernel IMAGE [--append ARGS]`, which replace the run's name.
    kernel: Option<String>,
    /// `--config`, `--env` words.
    options: String,
    /// The accelerator asked for, with its QEMU properties.
    accel: Option<(Accel, Option<String>)>,
    /// `-- ARGS`, or empty.
    extra: String,
}

impl Reproduce {
    /// How to reproduce a run of the invocation `options`.
    pub fn of(options: &Options) -> Reproduce {
        let environment = &options.environment;
        let mut prefix: Vec<String> = [
            ("QEMU", &environment.qemu),
            ("MACHINE", &environment.machine),
            ("TIMEOUT", &environment.timeout),
            ("MAX_SMP", &environment.max_smp),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some(format!("{name}={}", quote(value.as_deref()?))))
        .collect();
        // `./run_tests` from the workspace, its full path from anywhere else (`cargo run` in a
        // test crate's directory).
        let in_workspace = std::env::current_dir().is_ok_and(|current| current == options.workspace);
        prefix.push(if in_workspace {
            "./run_tests".to_owned()
        } else {
            quote(&options.workspace.join("run_tests").display().to_string())
        });
        let kernel = options.kernel.as_ref().map(|kernel| {
            let mut words = format!("--kernel {}", quote(&crate::workspace::shown(&kernel.image)));
            if let Some(append) = &kernel.append {
                words.push_str(&format!(" --append {}", quote(append)));
            }
            words
        });
        let mut words: Vec<String> = Vec::new();
        if options.config != Options::new(&options.workspace).config {
            words.push(format!(
                "--config {}",
                quote(&crate::workspace::shown(&options.config))
            ));
        }
        for (key, value) in &options.guest_variables {
            words.push(format!("--env {}", quote(&format!("{key}={value}"))));
        }
        let extra = if options.extra_qemu_args.is_empty() {
            String::new()
        } else {
            let args: Vec<String> = options.extra_qemu_args.iter().map(|arg| quote(arg)).collect();
            format!(" -- {}", args.join(" "))
        };
        Reproduce {
            prefix: prefix.join(" "),
            kernel,
            options: words.iter().map(|word| format!(" {word}")).collect(),
            accel: options
                .accel
                .map(|accel| (accel, options.accel_properties.clone())),
            extra,
        }
    }

    /// The command line for the run `name`, which ran under `accel` (if it started) on
    /// `machine`.
    pub fn line(&self, name: &str, accel: Option<Accel>, machine: Option<&str>) -> String {
        // A `--differential` side is reproduced by its run's name and what its side changed:
        // its accelerator (`msr@kvm`), or its machine (`timer@gicv2`, through MACHINE).
        let prefix = match (crate::differential::side_of(name), machine) {
            (Some(side), Some(machine))
                if side.gic_version.is_some() && !self.prefix.contains("MACHINE=") =>
            {
                format!("MACHINE={} {}", quote(machine), self.prefix)
            }
            _ => self.prefix.clone(),
        };
        let target = self
            .kernel
            .clone()
            .unwrap_or_else(|| quote(crate::differential::run_of(name)));
        let accel = match (&self.accel, accel) {
            (Some((asked, properties)), _) => {
                let value = match properties {
                    Some(properties) => format!("{asked},{properties}"),
                    None => asked.to_string(),
                };
                format!(" --accel {}", quote(&value))
            }
            (None, Some(used)) => format!(" --accel {used}"),
            (None, None) => String::new(),
        };
        format!("{prefix} {target}{accel}{}{}", self.options, self.extra)
    }
}

/// The `-machine` value of a shell-quoted QEMU command, unquoted.
fn machine_of(command: &str) -> Option<String> {
    let word = command.split(" -machine ").nth(1)?.split(' ').next()?;
    Some(word.trim_matches('\'').to_owned())
}

/// Prints the plain format.
#[derive(Debug, Default)]
pub struct PlainReporter {
    /// How to reproduce a failed run.
    reproduce: Reproduce,
    /// The accelerator each started run used.
    accels: BTreeMap<String, Accel>,
    /// The machine each started run used.
    machines: BTreeMap<String, String>,
    /// Colour the verdicts.
    colour: bool,
    /// Show a live progress line.
    progress: bool,
    /// Runs finished.
    finished: usize,
    /// Runs to report.
    total: usize,
    /// Names of the runs in progress.
    running: Vec<String>,
    /// Whether a progress line is on the screen.
    progress_shown: bool,
}

impl PlainReporter {
    /// A plain reporter; `colour` colours the verdicts, `progress` shows a progress line,
    /// `reproduce` says how to rerun a failed run.
    pub fn new(colour: bool, progress: bool, reproduce: Reproduce) -> PlainReporter {
        PlainReporter {
            colour,
            progress,
            reproduce,
            ..PlainReporter::default()
        }
    }

    fn result(&self, result: &TestResult) {
        println!("{}", display_line(&result.name, &result.outcome, self.colour));
        for note in &result.notes {
            println!("    {note}");
        }
        if result.outcome.verdict() == Verdict::Fail {
            let log = result.log.as_deref().map(shown).unwrap_or_default();
            let accel = self.accels.get(&result.name).copied();
            let machine = self.machines.get(&result.name).map(String::as_str);
            println!(
                "    log: {log}; reproduce alone with: {}",
                self.reproduce.line(&result.name, accel, machine)
            );
        }
    }

    fn clear_progress(&mut self) {
        if self.progress_shown {
            print!("\r\x1b[K");
            self.progress_shown = false;
        }
    }

    fn draw_progress(&mut self) {
        if !self.progress || self.running.is_empty() {
            let _ = std::io::stdout().flush();
            return;
        }
        print!(
            "[{}/{}] running: {}",
            self.finished,
            self.total,
            self.running.join(", ")
        );
        let _ = std::io::stdout().flush();
        self.progress_shown = true;
    }
}

impl Reporter for PlainReporter {
    fn event(&mut self, event: &Event<'_>) {
        match *event {
            Event::Begin { total } => self.total = total,
            Event::Message { text } => {
                self.clear_progress();
                println!("{text}");
                self.draw_progress();
            }
            Event::Started {
                name, accel, command, ..
            } => {
                self.accels.insert(name.to_owned(), accel);
                if let Some(machine) = machine_of(command) {
                    self.machines.insert(name.to_owned(), machine);
                }
                self.running.push(name.to_owned());
                self.clear_progress();
                self.draw_progress();
            }
            Event::Finished { result } => {
                self.running.retain(|running| *running != result.name);
                self.finished += 1;
                self.clear_progress();
                self.result(result);
                let _ = std::io::stdout().flush();
                self.draw_progress();
            }
            Event::Summary {
                results,
                totals,
                interrupted,
            } => {
                self.clear_progress();
                if interrupted {
                    println!("{}", interrupted_line(totals));
                    return;
                }
                if let Some(slowest) = slowest_line(results) {
                    println!("{slowest}");
                }
                println!("{totals}");
            }
            Event::Differential { comparison } => {
                self.clear_progress();
                for line in super::differential::plain_lines(comparison) {
                    println!("{line}");
                }
            }
            Event::DryRun { .. } | Event::GuestLine { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Arch;
    use crate::options::Kernel;

    #[test]
    fn a_kernel_run_is_reproduced_with_its_kernel_not_a_name() {
        let workspace = std::env::current_dir().unwrap();
        let mut options = Options::new(&workspace);
        options.kernel = Some(Kernel {
            image: workspace.join("target/aarch64-unknown-none/release/arm-selftest"),
            arch: Arch::Aarch64,
            append: Some("smp".to_owned()),
        });
        options.extra_qemu_args = vec!["-d".to_owned(), "int".to_owned()];
        let line = Reproduce::of(&options).line("arm-selftest", Some(Accel::Tcg), None);
        assert_eq!(
            line,
            "./run_tests --kernel target/aarch64-unknown-none/release/arm-selftest --append smp \
             --accel tcg -- -d int"
        );
    }

    /// A `--differential` GIC-version side is reproduced with its machine.
    #[test]
    fn a_gic_side_is_reproduced_with_its_machine() {
        let options = Options::new(&std::env::current_dir().unwrap());
        let reproduce = Reproduce::of(&options);
        assert_eq!(
            reproduce.line("timer@gicv2", Some(Accel::Tcg), Some("virt,gic-version=2")),
            "MACHINE=virt,gic-version=2 ./run_tests timer --accel tcg"
        );
        assert_eq!(
            reproduce.line("msr@kvm", Some(Accel::Kvm), Some("q35")),
            "./run_tests msr --accel kvm"
        );
        assert_eq!(
            machine_of(
                "qemu-system-aarch64 -nodefaults -display none -no-reboot -machine 'virt,gic-version=2' -cpu max"
            ),
            Some("virt,gic-version=2".to_owned())
        );
    }
}
