//! unittests.toml: one table per test run, with the keys of kvm-unit-tests' unittests.cfg sections.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

/// The group whose runs migrate on the guest's request (README "Migration").
pub const MIGRATION_GROUP: &str = "migration";

/// Timeout of a run when neither the table nor `TIMEOUT` gives one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);

/// A guest architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, clap::ValueEnum)]
pub enum Arch {
    /// 64-bit x86, guests in `tests-x86/`.
    #[serde(rename = "x86_64")]
    #[value(name = "x86_64")]
    X86_64,
    /// 64-bit Arm, guests in `tests-aarch64/`.
    #[serde(rename = "aarch64")]
    #[value(name = "aarch64")]
    Aarch64,
}

impl Arch {
    /// Every architecture, in the order the runner handles them.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The name used in unittests.toml and in `qemu-system-<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The workspace directory that holds this architecture's guest crates.
    pub fn test_directory(self) -> &'static str {
        match self {
            Arch::X86_64 => "tests-x86",
            Arch::Aarch64 => "tests-aarch64",
        }
    }

    /// The Rust target triple guests of this architecture are built for.
    pub fn target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-none",
            Arch::Aarch64 => "aarch64-unknown-none",
        }
    }

    /// The architecture of the machine the runner itself runs on, when it is one of ours.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A QEMU accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// The kernel's hypervisor, /dev/kvm.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl Accel {
    /// The name QEMU's `-accel` option takes.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Accel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(format!("unknown accelerator '{other}', expected 'kvm' or 'tcg'")),
        }
    }
}

/// The `smp` key: a CPU count, "max", or a range "MIN-MAX".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Smp {
    /// This many CPUs (at least 1), capped by `MAX_SMP`.
    Count(u32),
    /// `MAX_SMP`, else the host's CPU count.
    Max,
    /// `"MIN-MAX"`: `MAX_SMP` (else the host's CPU count) brought into `min..=max`, then
    /// capped by `MAX_SMP` when that is set, as a count is. kvm-unit-tests writes the cap as
    /// `smp = $((($MAX_SMP < 8)?$MAX_SMP:8))` (its GIC tests: a GICv2 serves at most 8
    /// CPUs); the floor lets a test that needs CPUs besides its targets have them on a host
    /// with fewer CPUs.
    Range {
        /// The fewest CPUs (at least 1).
        min: u32,
        /// The most CPUs (at least `min`).
        max: u32,
    },
}

impl Default for Smp {
    fn default() -> Self {
        Smp::Count(1)
    }
}

impl Smp {
    /// The CPU count to give QEMU, given `MAX_SMP` (if set) and the host's CPU count.
    pub fn resolve(self, max_smp: Option<u32>, host_cpus: u32) -> u32 {
        let cap = |count: u32| max_smp.map_or(count, |limit| count.min(limit.max(1)));
        match self {
            Smp::Max => max_smp.unwrap_or(host_cpus).max(1),
            Smp::Count(count) => cap(count),
            Smp::Range { min, max } => cap(max_smp.unwrap_or(host_cpus).clamp(min, max)),
        }
    }

    /// The count as a shell word for the standalone scripts, which read the host's CPU count
    /// when they run (they have no `MAX_SMP`).
    pub fn shell_word(self) -> String {
        const HOST_CPUS: &str = "$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)";
        match self {
            Smp::Count(count) => count.to_string(),
            Smp::Max => format!("\"{HOST_CPUS}\""),
            Smp::Range { min, max } => format!(
                "\"$(cpus={HOST_CPUS}; [ \"$cpus\" -lt {min} ] && cpus={min}; [ \"$cpus\" -gt {max} ] && cpus={max}; echo \"$cpus\")\""
            ),
        }
    }
}

const SMP_EXPECTED: &str = "an integer >= 1, \"max\", or a range \"MIN-MAX\" with 1 <= MIN <= MAX";

/// Parses `"MIN-MAX"` (decimal, 1 <= MIN <= MAX).
fn parse_smp_range(text: &str) -> Option<Smp> {
    let (min, max) = text.split_once('-')?;
    let number = |part: &str| {
        (!part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| part.parse::<u32>().ok())
            .flatten()
    };
    let (min, max) = (number(min)?, number(max)?);
    (1 <= min && min <= max).then_some(Smp::Range { min, max })
}

impl<'de> Deserialize<'de> for Smp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SmpVisitor;
        impl Visitor<'_> for SmpVisitor {
            type Value = Smp;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(SMP_EXPECTED)
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Smp, E> {
                match u32::try_from(value) {
                    Ok(count) if count >= 1 => Ok(Smp::Count(count)),
                    _ => Err(E::invalid_value(Unexpected::Signed(value), &SMP_EXPECTED)),
                }
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Smp, E> {
                match u32::try_from(value) {
                    Ok(count) if count >= 1 => Ok(Smp::Count(count)),
                    _ => Err(E::invalid_value(Unexpected::Unsigned(value), &SMP_EXPECTED)),
                }
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Smp, E> {
                if value == "max" {
                    Ok(Smp::Max)
                } else {
                    parse_smp_range(value)
                        .ok_or_else(|| E::invalid_value(Unexpected::Str(value), &SMP_EXPECTED))
                }
            }
        }
        deserializer.deserialize_any(SmpVisitor)
    }
}

/// The longest timeout accepted (365 days): far beyond any run, and far from overflowing a
/// deadline.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86400);

/// How many fraction digits of a duration count; further ones are ignored (the standalone
/// scripts parse durations with shell integer arithmetic, which this keeps exact).
pub const DURATION_FRACTION_DIGITS: usize = 6;

/// Parses a duration: digits with an optional fraction (`90`, `1.5`) and an optional unit `s`,
/// `m`, `h` or `d` (seconds by default), surrounded by optional blanks. The value is taken in
/// whole milliseconds, rounded down; a value other than zero that comes to 0 ms is refused
/// (0 means "no timeout", so `0.0001` must not silently mean it), as is anything above
/// [`MAX_DURATION`]. The standalone scripts implement the same grammar (`standalone.rs`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let invalid = || format!("invalid duration '{text}', expected seconds or a number with s, m, h or d");
    let (number, unit_millis) = match text.char_indices().last() {
        Some((index, 's')) => (&text[..index], 1000),
        Some((index, 'm')) => (&text[..index], 60_000),
        Some((index, 'h')) => (&text[..index], 3_600_000),
        Some((index, 'd')) => (&text[..index], 86_400_000),
        _ => (text, 1000),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || number.ends_with('.') {
        return Err(invalid());
    }
    let too_long = || {
        format!(
            "duration '{text}' is too long: at most {}",
            format_duration(MAX_DURATION)
        )
    };
    let whole_digits = whole.trim_start_matches('0');
    if whole_digits.len() > 12 {
        return Err(too_long());
    }
    let whole: u128 = whole_digits.parse().unwrap_or(0);
    let fraction_digits = &fraction[..fraction.len().min(DURATION_FRACTION_DIGITS)];
    let scale = 10u128.pow(fraction_digits.len() as u32);
    let fraction: u128 = fraction_digits.parse().unwrap_or(0);
    let millis = whole * unit_millis + fraction * unit_millis / scale;
    if millis > MAX_DURATION.as_millis() {
        return Err(too_long());
    }
    if millis == 0 && number.bytes().any(|byte| (b'1'..=b'9').contains(&byte)) {
        return Err(format!(
            "duration '{text}' is shorter than a millisecond: write 0 for no timeout"
        ));
    }
    Ok(Duration::from_millis(
        u64::try_from(millis).map_err(|_| too_long())?,
    ))
}

/// Checks a whole number of seconds against [`MAX_DURATION`].
fn checked_seconds(seconds: u64) -> Result<Duration, String> {
    let duration = Duration::from_secs(seconds);
    if duration > MAX_DURATION {
        return Err(format!(
            "duration {seconds} seconds is too long: at most {}",
            format_duration(MAX_DURATION)
        ));
    }
    Ok(duration)
}

/// Renders a duration the way the runner reports it: "2s", "1.5s".
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}s", (duration.as_secs_f64() * 1000.0).round() / 1000.0)
    }
}

/// The `timeout` key: whole seconds or a string such as "90s" or "2m"; 0 disables the timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TimeoutSetting(Duration);

const TIMEOUT_EXPECTED: &str = "seconds as an integer >= 0 or a string such as \"90s\" or \"2m\"";

impl<'de> Deserialize<'de> for TimeoutSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimeoutVisitor;
        impl Visitor<'_> for TimeoutVisitor {
            type Value = TimeoutSetting;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(TIMEOUT_EXPECTED)
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<TimeoutSetting, E> {
                let seconds = u64::try_from(value)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(value), &TIMEOUT_EXPECTED))?;
                self.visit_u64(seconds)
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<TimeoutSetting, E> {
                checked_seconds(value).map(TimeoutSetting).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<TimeoutSetting, E> {
                parse_duration(value).map(TimeoutSetting).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(TimeoutVisitor)
    }
}

/// Accepts an array of strings, or one string that `split` turns into a list.
struct ListVisitor {
    split: fn(&str) -> Result<Vec<String>, String>,
    expecting: &'static str,
}

impl<'de> Visitor<'de> for ListVisitor {
    type Value = Vec<String>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Vec<String>, E> {
        (self.split)(value).map_err(E::custom)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut sequence: A) -> Result<Vec<String>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = sequence.next_element::<String>()? {
            items.push(item);
        }
        Ok(items)
    }
}

/// `disabled_if`: one condition table, or an array of them (the run is skipped if any holds).
fn conditions<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Condition>, D::Error> {
    struct ConditionsVisitor;

    impl<'de> Visitor<'de> for ConditionsVisitor {
        type Value = Vec<Condition>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a condition table, or an array of them")
        }

        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Vec<Condition>, A::Error> {
            Condition::deserialize(de::value::MapAccessDeserializer::new(map))
                .map(|condition| vec![condition])
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut sequence: A) -> Result<Vec<Condition>, A::Error> {
            let mut conditions = Vec::new();
            while let Some(condition) = sequence.next_element::<Condition>()? {
                conditions.push(condition);
            }
            if conditions.is_empty() {
                return Err(de::Error::custom(
                    "an empty array; give one condition table or more",
                ));
            }
            Ok(conditions)
        }
    }

    deserializer.deserialize_any(ConditionsVisitor)
}

fn shell_words<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    deserializer.deserialize_any(ListVisitor {
        split: |text| {
            shlex::split(text)
                .ok_or_else(|| format!("cannot split '{text}' into shell words (unbalanced quotes?)"))
        },
        expecting: "an array of strings or a string of shell words",
    })
}

fn whitespace_words<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    deserializer.deserialize_any(ListVisitor {
        split: |text| Ok(text.split_whitespace().map(str::to_owned).collect()),
        expecting: "an array of strings or a whitespace-separated string",
    })
}

fn arguments<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    deserializer.deserialize_any(ListVisitor {
        split: |text| {
            Ok(if text.is_empty() {
                Vec::new()
            } else {
                vec![text.to_owned()]
            })
        },
        expecting: "a string or an array of strings",
    })
}

/// A host property a run needs (the `requires` key), checked before it boots: a run whose
/// requirement the host lacks is skipped with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// `"kvm"`: the run uses the kvm accelerator (so /dev/kvm is usable).
    Kvm,
    /// `"root"`: the runner runs as root.
    Root,
    /// `"device:<name>"`: QEMU has this device (`qemu -device help` lists it).
    Device(String),
}

/// The prefix of a device requirement.
const DEVICE_PREFIX: &str = "device:";
const REQUIREMENT_EXPECTED: &str = "\"kvm\", \"root\" or \"device:<QEMU device name>\"";

impl fmt::Display for Requirement {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Kvm => formatter.write_str("kvm"),
            Requirement::Root => formatter.write_str("root"),
            Requirement::Device(name) => write!(formatter, "{DEVICE_PREFIX}{name}"),
        }
    }
}

impl FromStr for Requirement {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "kvm" => Ok(Requirement::Kvm),
            "root" => Ok(Requirement::Root),
            _ => match text.strip_prefix(DEVICE_PREFIX) {
                Some(name) if is_device_name(name) => Ok(Requirement::Device(name.to_owned())),
                _ => Err(format!(
                    "unknown requirement '{text}', expected {REQUIREMENT_EXPECTED}"
                )),
            },
        }
    }
}

/// Whether `name` can be a QEMU device name: letters, digits, `-`, `_`, `.` and `,`.
fn is_device_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "-_.".contains(character))
}

impl<'de> Deserialize<'de> for Requirement {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// The accelerator as `ACCEL`/`--accel` give it: a name and optional QEMU properties
/// (`tcg,thread=multi`, `kvm,kernel-irqchip=split`), passed as `-accel NAME,PROPERTIES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccelSetting {
    /// kvm or tcg.
    pub accel: Accel,
    /// What follows the first comma, if anything.
    pub properties: Option<String>,
}

impl std::str::FromStr for AccelSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, properties) = match text.split_once(',') {
            Some((name, properties)) => (name, Some(properties.to_owned())),
            None => (text, None),
        };
        let accel = match name {
            "kvm" => Accel::Kvm,
            "tcg" => Accel::Tcg,
            _ => {
                return Err(format!(
                    "{name:?} is neither kvm nor tcg (properties may follow: tcg,thread=multi)"
                ));
            }
        };
        if properties.as_deref().is_some_and(str::is_empty) {
            return Err("a comma after the accelerator needs properties after it".to_owned());
        }
        Ok(AccelSetting { accel, properties })
    }
}

/// How long an `expect` step waits when it names no `timeout`.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// One step of an `expect` script: `{ send = "text" }` writes the text to the guest's console
/// (the serial port's input), `{ expect = "text", timeout = "5s" }` waits for an output line
/// that contains the text.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawStep")]
pub enum Step {
    /// Send this text to the guest.
    Send(String),
    /// Wait, at most `timeout`, for a serial line containing `text`.
    Expect {
        /// The text to find in a line.
        text: String,
        /// How long to wait for it.
        timeout: Duration,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    send: Option<String>,
    expect: Option<String>,
    timeout: Option<TimeoutSetting>,
}

impl TryFrom<RawStep> for Step {
    type Error = String;

    fn try_from(raw: RawStep) -> Result<Self, Self::Error> {
        match (raw.send, raw.expect, raw.timeout) {
            (Some(text), None, None) => Ok(Step::Send(text)),
            (None, Some(text), timeout) if !text.is_empty() => Ok(Step::Expect {
                text,
                timeout: timeout.map_or(DEFAULT_STEP_TIMEOUT, |setting| setting.0),
            }),
            (None, Some(_), _) => Err("an `expect` step needs non-empty text".to_owned()),
            (Some(_), None, Some(_)) => Err("a `send` step takes no `timeout`".to_owned()),
            _ => Err(
                "each step is either { send = \"...\" } or { expect = \"...\", timeout = ... }".to_owned(),
            ),
        }
    }
}

/// The `disabled_if` key: a condition under which the run is skipped. Every key given must
/// match; at least one must be given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawCondition")]
pub struct Condition {
    /// Disabled under this accelerator.
    pub accel: Option<Accel>,
    /// Disabled on this machine type.
    pub machine: Option<String>,
    /// Disabled under KVM when the host's KVM module is this one (an erratum of that
    /// hypervisor, decided before boot).
    pub kvm_module: Option<KvmModule>,
    /// Why, for the SKIP line: `disabled if kvm_module = kvm_pvm: <reason>`.
    pub reason: Option<String>,
}

/// A host KVM module, as the guest environment's `HOST_KVM_MODULE` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvmModule {
    /// Intel VMX.
    KvmIntel,
    /// AMD SVM.
    KvmAmd,
    /// kvm_pvm, a software KVM.
    KvmPvm,
}

impl KvmModule {
    /// The module's name in /sys/module.
    pub fn name(self) -> &'static str {
        match self {
            KvmModule::KvmIntel => "kvm_intel",
            KvmModule::KvmAmd => "kvm_amd",
            KvmModule::KvmPvm => "kvm_pvm",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    accel: Option<Accel>,
    machine: Option<String>,
    kvm_module: Option<KvmModule>,
    reason: Option<String>,
}

impl TryFrom<RawCondition> for Condition {
    type Error = String;

    fn try_from(raw: RawCondition) -> Result<Self, Self::Error> {
        if raw.accel.is_none() && raw.machine.is_none() && raw.kvm_module.is_none() {
            return Err("an empty condition; give `accel`, `machine` and/or `kvm_module`".to_owned());
        }
        if raw.kvm_module.is_some() && raw.accel == Some(Accel::Tcg) {
            return Err("`kvm_module` holds under kvm only, never with `accel = \"tcg\"`".to_owned());
        }
        if raw
            .reason
            .as_deref()
            .is_some_and(|reason| reason.trim().is_empty() || reason.contains('\n'))
        {
            return Err("`reason` must be one line of text".to_owned());
        }
        Ok(Condition {
            accel: raw.accel,
            machine: raw.machine,
            kvm_module: raw.kvm_module,
            reason: raw.reason,
        })
    }
}

impl Condition {
    /// Whether the condition holds for a run under `accel` on `machine`, on a host whose KVM
    /// module is `host_module` (`kvm_intel`, `kvm_amd`, `kvm_pvm` or `none`).
    pub fn holds(&self, accel: Accel, machine: &str, host_module: &str) -> bool {
        self.accel.is_none_or(|wanted| wanted == accel)
            && self.machine.as_deref().is_none_or(|wanted| wanted == machine)
            && self
                .kvm_module
                .is_none_or(|wanted| accel == Accel::Kvm && wanted.name() == host_module)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(accel) = self.accel {
            parts.push(format!("accel = {accel}"));
        }
        if let Some(machine) = &self.machine {
            parts.push(format!("machine = {machine}"));
        }
        if let Some(module) = self.kvm_module {
            parts.push(format!("kvm_module = {}", module.name()));
        }
        formatter.write_str(&parts.join(" and "))?;
        match &self.reason {
            Some(reason) => write!(formatter, ": {reason}"),
            None => Ok(()),
        }
    }
}

/// The `env` key: extra `KEY=VALUE` lines for the guest environment, checked so that every
/// pair stays one line of the file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "IndexMap<String, String>")]
pub struct GuestVariables(pub Vec<(String, String)>);

impl TryFrom<IndexMap<String, String>> for GuestVariables {
    type Error = String;

    fn try_from(map: IndexMap<String, String>) -> Result<Self, Self::Error> {
        map.into_iter()
            .map(|(key, value)| check_variable(&key, &value).map(|()| (key, value)))
            .collect::<Result<Vec<_>, _>>()
            .map(GuestVariables)
    }
}

/// Checks one guest environment variable: the key is a shell-style name, the value one line.
pub fn check_variable(key: &str, value: &str) -> Result<(), String> {
    let mut characters = key.chars();
    let starts_well = characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_');
    if !starts_well || !characters.all(|character| character.is_ascii_alphanumeric() || character == '_') {
        return Err(format!(
            "bad variable name '{key}', expected letters, digits and _ (not starting with a digit)"
        ));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(format!("the value of {key} must be one line"));
    }
    Ok(())
}

/// The `migrate` key: whether a run is live-migrated (README "Migration").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Migrate {
    /// Not given: a migration run when in group `migration`; `--migrate` migrates it once.
    #[default]
    Unset,
    /// `migrate = true`: a migration run (migrates on the guest's request), as group
    /// `migration`.
    Requested,
    /// `migrate = false`, or `migrate = "why"`: never migrated; `--migrate` skips it, saying
    /// why when a reason is given.
    Never(Option<String>),
}

const MIGRATE_EXPECTED: &str = "true, false, or a one-line reason why the run cannot migrate";

impl<'de> Deserialize<'de> for Migrate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MigrateVisitor;
        impl Visitor<'_> for MigrateVisitor {
            type Value = Migrate;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(MIGRATE_EXPECTED)
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Migrate, E> {
                Ok(if value {
                    Migrate::Requested
                } else {
                    Migrate::Never(None)
                })
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Migrate, E> {
                if value.trim().is_empty() || value.contains(['\n', '\r']) {
                    return Err(E::invalid_value(Unexpected::Str(value), &MIGRATE_EXPECTED));
                }
                Ok(Migrate::Never(Some(value.to_owned())))
            }
        }
        deserializer.deserialize_any(MigrateVisitor)
    }
}

/// One table as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default)]
    expect: Vec<Step>,
    file: Option<toml::Spanned<String>>,
    arch: Option<toml::Spanned<Arch>>,
    smp: Option<Smp>,
    #[serde(default, deserialize_with = "shell_words")]
    qemu_params: Vec<String>,
    #[serde(default, deserialize_with = "arguments")]
    test_args: Vec<String>,
    #[serde(default, deserialize_with = "whitespace_words")]
    groups: Vec<String>,
    accel: Option<Accel>,
    timeout: Option<TimeoutSetting>,
    machine: Option<String>,
    #[serde(default)]
    requires: Vec<Requirement>,
    disabled: Option<String>,
    #[serde(default, deserialize_with = "conditions")]
    disabled_if: Vec<Condition>,
    #[serde(default)]
    env: GuestVariables,
    migrate: Option<toml::Spanned<Migrate>>,
}

/// One test run: a table of unittests.toml with its defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestEntry {
    /// The table name: the run's name in output and logs.
    pub name: String,
    /// The guest crate and binary name (`file`, else the table name).
    pub file: String,
    /// Byte range of the `file` value in the file (of the table's header when `file` is not
    /// given), for error messages.
    pub file_span: Option<Range<usize>>,
    /// The `arch` key, if given.
    pub arch: Option<Arch>,
    /// Byte range of the `arch` value in the file, for error messages.
    pub arch_span: Option<Range<usize>>,
    /// The `smp` key (default 1).
    pub smp: Smp,
    /// Extra QEMU parameters, appended after the runner's defaults.
    pub qemu_params: Vec<String>,
    /// Arguments for the guest; passed joined by spaces as `-append`.
    pub test_args: Vec<String>,
    /// The run's groups.
    pub groups: Vec<String>,
    /// The only accelerator this run may use, if any.
    pub accel: Option<Accel>,
    /// The `timeout` key (zero disables the timeout); `None` means the default.
    pub timeout: Option<Duration>,
    /// The QEMU machine type, if not the architecture's default.
    pub machine: Option<String>,
    /// Host properties the run needs; it is skipped without them.
    pub requires: Vec<Requirement>,
    /// Why the run is disabled (`disabled = "reason"`): it is always skipped.
    pub disabled: Option<String>,
    /// When the run is skipped: if any of these holds (`disabled_if = { accel = "tcg" }`, or
    /// an array of such tables).
    pub disabled_if: Vec<Condition>,
    /// Extra guest environment variables (`env = { KEY = "VALUE" }`).
    pub env: Vec<(String, String)>,
    /// The `expect` script: console input to send and output to wait for, in order.
    pub expect: Vec<Step>,
    /// The `migrate` key.
    pub migrate: Migrate,
}

impl TestEntry {
    /// A run with every key at its default, for an image given on the command line.
    pub fn ad_hoc(name: &str) -> TestEntry {
        TestEntry {
            name: name.to_owned(),
            file: name.to_owned(),
            file_span: None,
            arch: None,
            arch_span: None,
            smp: Smp::default(),
            qemu_params: Vec::new(),
            test_args: Vec::new(),
            groups: Vec::new(),
            accel: None,
            timeout: None,
            machine: None,
            requires: Vec::new(),
            disabled: None,
            disabled_if: Vec::new(),
            env: Vec::new(),
            expect: Vec::new(),
            migrate: Migrate::Unset,
        }
    }

    /// Whether the run migrates on the guest's request: it is in group `migration` or says
    /// `migrate = true`.
    pub fn is_migration_run(&self) -> bool {
        self.migrate == Migrate::Requested || self.in_group(MIGRATION_GROUP)
    }

    /// Whether the run belongs to `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|own| own == group)
    }

    /// The timeout in force given the `TIMEOUT` environment value; `None` when disabled.
    pub fn effective_timeout(&self, environment_timeout: Option<Duration>) -> Option<Duration> {
        let timeout = environment_timeout.or(self.timeout).unwrap_or(DEFAULT_TIMEOUT);
        (!timeout.is_zero()).then_some(timeout)
    }

    /// The architecture of the entry's guest crate: the directory (tests-x86/ or
    /// tests-aarch64/) that holds a crate named `file`. A crate that does not exist, or an
    /// `arch` key that disagrees with where it lives, is an error located in the file.
    pub fn resolve_arch(&self, workspace: &Path, config: &Config) -> Result<Arch, ConfigError> {
        self.check_arch(crate_arch(workspace, &self.file), config)
    }

    /// [`TestEntry::resolve_arch`] given where its crate lives (`found`, from [`crate_arch`]):
    /// runs that share a crate look it up once.
    pub fn check_arch(&self, found: Option<Arch>, config: &Config) -> Result<Arch, ConfigError> {
        match (self.arch, found) {
            (Some(given), Some(found)) if given != found => {
                let offset = self.arch_span.as_ref().map_or(0, |span| span.start);
                Err(config.error_at(
                    offset,
                    format!(
                        "[{}] arch: '{given}' disagrees with where the crate lives: {}/{}/ holds {found} guests",
                        self.name,
                        found.test_directory(),
                        self.file
                    ),
                ))
            }
            (_, Some(found)) => Ok(found),
            (_, None) => {
                let offset = self.file_span.as_ref().map_or(0, |span| span.start);
                let directories: Vec<String> = Arch::ALL
                    .iter()
                    .map(|arch| format!("{}/", arch.test_directory()))
                    .collect();
                Err(config.error_at(
                    offset,
                    format!(
                        "[{}] file: no guest crate '{}' in {}",
                        self.name,
                        self.file,
                        directories.join(" or ")
                    ),
                ))
            }
        }
    }
}

/// The architecture whose test directory (tests-x86/ or tests-aarch64/) holds a guest crate
/// named `file`, if one does.
pub fn crate_arch(workspace: &Path, file: &str) -> Option<Arch> {
    Arch::ALL
        .into_iter()
        .find(|arch| workspace.join(arch.test_directory()).join(file).is_dir())
}

/// A parsed unittests.toml.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from, as given.
    pub path: PathBuf,
    /// The runs, in file order.
    pub entries: Vec<TestEntry>,
    source: String,
}

/// The byte range of each table header's line (`[name]`, `["name"]` or `['name']`, its text
/// without the surrounding whitespace), keyed by the name, the first such line of a name: a
/// table's `file` span when it has no `file` key. One pass over the file (a pass per run cost
/// a few milliseconds for the project's few hundred runs); a name is looked up as a run name
/// (no brackets or quotes in it, see [`is_run_name`]).
fn header_spans(source: &str) -> HashMap<&str, Range<usize>> {
    let mut spans = HashMap::new();
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let text = line.trim();
        if let Some(inner) = text.strip_prefix('[') {
            let start = offset + (line.len() - line.trim_start().len());
            let span = start..start + text.len();
            // `[name]...`: the name runs to the first ']'.
            if let Some((name, _)) = inner.split_once(']') {
                spans.entry(name).or_insert_with(|| span.clone());
            }
            // `["name"]...` or `['name']...`: to the first closing quote, then a ']'.
            for quote in ['"', '\''] {
                if let Some((name, rest)) = inner
                    .strip_prefix(quote)
                    .and_then(|quoted| quoted.split_once(quote))
                    && rest.starts_with(']')
                {
                    spans.entry(name).or_insert_with(|| span.clone());
                }
            }
        }
        offset += line.len();
    }
    spans
}

/// An error in unittests.toml, located at a line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {message}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The file's content is wrong.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What is wrong, naming the table and key.
        message: String,
    },
}

impl Config {
    /// Reads and parses a unittests.toml file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            message: error.to_string(),
        })?;
        Config::parse(path, source)
    }

    /// Parses unittests.toml content; `path` is only used in messages.
    pub fn parse(path: &Path, source: String) -> Result<Config, ConfigError> {
        let mut config = Config {
            path: path.to_path_buf(),
            entries: Vec::new(),
            source,
        };
        let raw: IndexMap<String, RawEntry> = match toml::from_str(&config.source) {
            Ok(raw) => raw,
            Err(error) => {
                let offset = error.span().map_or(0, |span| span.start);
                let message = error.message().trim().replace('\n', " ");
                let message = match config.locate_key(offset) {
                    (Some(table), Some(key)) => format!("[{table}] {key}: {message}"),
                    (Some(table), None) => format!("[{table}]: {message}"),
                    (None, Some(key)) => format!("{key}: {message}"),
                    (None, None) => message,
                };
                return Err(config.error_at(offset, message));
            }
        };
        if let Some(name) = raw.keys().find(|name| !is_run_name(name)) {
            return Err(config.error_at(config.table_offset(name), format!("[{name}]: {RUN_NAME_RULE}")));
        }
        // `migrate = false` contradicts group `migration`, whose runs migrate on request.
        if let Some((name, span)) = raw.iter().find_map(|(name, raw)| {
            let migrate = raw.migrate.as_ref()?;
            (matches!(migrate.get_ref(), Migrate::Never(_))
                && raw.groups.iter().any(|group| group == MIGRATION_GROUP))
            .then(|| (name.clone(), migrate.span()))
        }) {
            return Err(config.error_at(
                span.start,
                format!(
                    "[{name}] migrate: the run is in group `{MIGRATION_GROUP}`, whose runs migrate on \
                     the guest's request; drop the group or the key"
                ),
            ));
        }
        let headers = header_spans(&config.source);
        let entries = raw
            .into_iter()
            .map(|(name, raw)| TestEntry {
                file_span: Some(raw.file.as_ref().map_or_else(
                    || headers.get(name.as_str()).cloned().unwrap_or(0..0),
                    toml::Spanned::span,
                )),
                file: raw.file.map_or_else(|| name.clone(), toml::Spanned::into_inner),
                arch: raw.arch.as_ref().map(|arch| *arch.get_ref()),
                arch_span: raw.arch.as_ref().map(toml::Spanned::span),
                smp: raw.smp.unwrap_or_default(),
                qemu_params: raw.qemu_params,
                test_args: raw.test_args,
                groups: raw.groups,
                accel: raw.accel,
                timeout: raw.timeout.map(|timeout| timeout.0),
                machine: raw.machine,
                requires: raw.requires,
                disabled: raw.disabled,
                disabled_if: raw.disabled_if,
                env: raw.env.0,
                expect: raw.expect,
                migrate: raw.migrate.map(toml::Spanned::into_inner).unwrap_or_default(),
                name,
            })
            .collect();
        config.entries = entries;
        Ok(config)
    }

    /// An error at byte `offset` of the file.
    pub fn error_at(&self, offset: usize, message: String) -> ConfigError {
        let (line, column) = line_column(&self.source, offset);
        ConfigError::Invalid {
            path: self.path.display().to_string(),
            line,
            column,
            message,
        }
    }

    /// The byte offset of table `name`'s header (or of its key, for an inline table).
    fn table_offset(&self, name: &str) -> usize {
        let mut line_start = 0;
        for line in self.source.split_inclusive('\n') {
            let key = line
                .split_once('=')
                .map(|(key, _)| key.trim().trim_matches(['"', '\'']));
            if table_header(line) == Some(name) || key == Some(name) {
                return line_start + line.find(name).unwrap_or(0);
            }
            line_start += line.len();
        }
        0
    }

    /// The table and key around byte `offset`, for naming them in a message.
    fn locate_key(&self, offset: usize) -> (Option<String>, Option<String>) {
        let offset = offset.min(self.source.len());
        let line_start = self.source[..offset].rfind('\n').map_or(0, |index| index + 1);
        let line_end = self.source[offset..]
            .find('\n')
            .map_or(self.source.len(), |index| offset + index);
        let line = &self.source[line_start..line_end];
        let table = self.source[..line_end]
            .lines()
            .rev()
            .find_map(table_header)
            .map(str::to_owned);
        let key = line
            .split_once('=')
            .map(|(key, _)| key.trim().trim_matches(['"', '\'']))
            .filter(|key| !key.is_empty() && !key.starts_with('['))
            .map(str::to_owned);
        (table, key)
    }
}

/// What a run name may be: it names the run's log and environment files, so these stay
/// inside the log directory and distinct.
pub const RUN_NAME_RULE: &str = "a run name is 1 to 200 ASCII letters, digits, '-', '_' and \
                                 '.', starting with a letter or digit (it names the run's log file)";

/// Whether `name` follows [`RUN_NAME_RULE`].
pub fn is_run_name(name: &str) -> bool {
    name.len() <= 200
        && name.starts_with(|first: char| first.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.'))
}

/// The table name of a `[name]` header line.
fn table_header(line: &str) -> Option<&str> {
    let line = line.trim();
    let inner = line.strip_prefix('[')?;
    let end = inner.rfind(']')?;
    let name = inner[..end].trim().trim_start_matches('[');
    let name = name.trim_end_matches(']').trim().trim_matches(['"', '\'']);
    (!name.is_empty()).then_some(name)
}

/// 1-based line and character column of byte `offset` in `source`.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {

    #[test]
    fn accel_settings_take_properties() {
        let plain: AccelSetting = "kvm".parse().unwrap();
        assert_eq!(
            plain,
            AccelSetting {
                accel: Accel::Kvm,
                properties: None
            }
        );
        let with: AccelSetting = "tcg,thread=multi,tb-size=64".parse().unwrap();
        assert_eq!(with.accel, Accel::Tcg);
        assert_eq!(with.properties.as_deref(), Some("thread=multi,tb-size=64"));
        assert!(
            "hvf"
                .parse::<AccelSetting>()
                .unwrap_err()
                .contains("neither kvm nor tcg")
        );
        assert!("kvm,".parse::<AccelSetting>().is_err());
    }

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("unittests.toml"), text.to_owned())
    }

    fn error(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(ConfigError::Invalid {
                path,
                line,
                column,
                message,
            }) => {
                assert_eq!(path, "unittests.toml");
                (line, column, message)
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn run_names_stay_inside_the_log_directory() {
        for (source, column) in [
            ("[ok]\n\n[\"../../x\"]\nfile = \"x\"\n", 3),
            ("[\"/tmp/x\"]\n", 3),
            ("[\"x/y\"]\n", 3),
            ("[\".hidden\"]\n", 3),
            ("[\"a b\"]\n", 3),
            ("[\"\"]\n", 1),
        ] {
            let (line, found_column, message) = error(source);
            let header = source.lines().position(|line| line.starts_with("[\"")).unwrap() + 1;
            assert_eq!((line, found_column), (header, column), "{source}: {message}");
            assert!(message.ends_with(RUN_NAME_RULE), "{message}");
        }
        let config = parse("[x_y]\n[\"x-y.2\"]\n[X9]\n").unwrap();
        assert_eq!(config.entries.len(), 3);
    }

    /// `migrate`: true, false or a one-line reason; anything else, or false in group
    /// `migration`, is an error at the value.
    #[test]
    fn migrate_key() {
        let config = parse(
            "[a]\nmigrate = true\n[b]\nmigrate = false\n[c]\nmigrate = \"why not\"\n[d]\n\
             [e]\ngroups = [\"migration\"]\n",
        )
        .unwrap();
        let migrate: Vec<&Migrate> = config.entries.iter().map(|entry| &entry.migrate).collect();
        assert_eq!(
            migrate,
            [
                &Migrate::Requested,
                &Migrate::Never(None),
                &Migrate::Never(Some("why not".into())),
                &Migrate::Unset,
                &Migrate::Unset,
            ]
        );
        let runs: Vec<bool> = config.entries.iter().map(TestEntry::is_migration_run).collect();
        assert_eq!(runs, [true, false, false, false, true]);
        for (source, message) in [
            (
                "[a]\nmigrate = 2\n",
                "[a] migrate: invalid type: integer `2`, expected true, false",
            ),
            (
                "[a]\nmigrate = \" \"\n",
                "[a] migrate: invalid value: string \" \"",
            ),
            ("[a]\nmigrate = \"a\\nb\"\n", "[a] migrate: invalid value: string"),
            ("[a]\nmigrate = [true]\n", "[a] migrate: invalid type: sequence"),
            (
                "[a]\ngroups = \"migration\"\nmigrate = false\n",
                "[a] migrate: the run is in group `migration`",
            ),
        ] {
            let (line, column, found) = error(source);
            assert_eq!((line, column), (source.lines().count(), 11), "{source}: {found}");
            assert!(found.starts_with(message), "{source}: {found}");
        }
    }

    #[test]
    fn defaults() {
        let config = parse("[msr]\n").unwrap();
        let entry = &config.entries[0];
        assert_eq!(entry.name, "msr");
        assert_eq!(entry.file, "msr");
        assert_eq!(entry.arch, None);
        assert_eq!(entry.smp, Smp::Count(1));
        assert!(entry.qemu_params.is_empty() && entry.test_args.is_empty() && entry.groups.is_empty());
        assert_eq!(entry.accel, None);
        assert_eq!(entry.timeout, None);
        assert_eq!(entry.machine, None);
        assert_eq!(entry.effective_timeout(None), Some(DEFAULT_TIMEOUT));
    }

    #[test]
    fn every_key_array_forms() {
        let config = parse(
            r#"
[one]
file = "guest"
arch = "aarch64"
smp = 4
qemu_params = ["-device", "foo,bar=1"]
test_args = ["a", "b=c"]
groups = ["g1", "nodefault"]
accel = "tcg"
timeout = 30
machine = "microvm"
"#,
        )
        .unwrap();
        let entry = &config.entries[0];
        assert_eq!(entry.file, "guest");
        assert_eq!(entry.arch, Some(Arch::Aarch64));
        assert!(entry.arch_span.is_some());
        assert_eq!(entry.smp, Smp::Count(4));
        assert_eq!(entry.qemu_params, ["-device", "foo,bar=1"]);
        assert_eq!(entry.test_args, ["a", "b=c"]);
        assert_eq!(entry.groups, ["g1", "nodefault"]);
        assert!(entry.in_group("nodefault"));
        assert_eq!(entry.accel, Some(Accel::Tcg));
        assert_eq!(entry.timeout, Some(Duration::from_secs(30)));
        assert_eq!(entry.machine.as_deref(), Some("microvm"));
    }

    #[test]
    fn every_key_string_forms() {
        let config = parse(
            r#"
[two]
smp = "max"
qemu_params = "-device 'foo bar' -m 256"
test_args = "selftest-arg1 key=value"
groups = "g1  g2"
timeout = "2m"
accel = "kvm"
arch = "x86_64"
"#,
        )
        .unwrap();
        let entry = &config.entries[0];
        assert_eq!(entry.smp, Smp::Max);
        assert_eq!(entry.qemu_params, ["-device", "foo bar", "-m", "256"]);
        assert_eq!(entry.test_args, ["selftest-arg1 key=value"]);
        assert_eq!(entry.groups, ["g1", "g2"]);
        assert_eq!(entry.timeout, Some(Duration::from_secs(120)));
        assert_eq!(entry.accel, Some(Accel::Kvm));
        assert_eq!(entry.arch, Some(Arch::X86_64));
    }

    #[test]
    fn order_is_kept() {
        let config = parse("[zeta]\n[alpha]\n[\"mid.dle\"]\n").unwrap();
        let names: Vec<_> = config.entries.iter().map(|entry| entry.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "mid.dle"]);
    }

    /// The span `header_spans` must give `name`: the first line whose trimmed text starts
    /// with one of its header forms (a pass per name, as the runner once did).
    fn header_span_by_scan(source: &str, name: &str) -> Range<usize> {
        let headers = [
            format!("[{name}]"),
            format!("[\"{name}\"]"),
            format!("['{name}']"),
        ];
        let mut offset = 0;
        for line in source.split_inclusive('\n') {
            let text = line.trim();
            if headers.iter().any(|header| text.starts_with(header.as_str())) {
                let start = offset + (line.len() - line.trim_start().len());
                return start..start + text.len();
            }
            offset += line.len();
        }
        0..0
    }

    #[test]
    fn file_spans_are_the_headers() {
        let source = "# [commented]\n  [plain]  # a comment\nsmp = 2\n[\"mid.dle\"]\n['single']\n\
                      [a.b]\nx = 1\n[[array]]\ninline = { file = \"fixture\" }\n[plain]\n\
                      [given]\nfile = \"fixture\"\n";
        let spans = header_spans(source);
        for name in [
            "plain",
            "mid.dle",
            "single",
            "a",
            "array",
            "inline",
            "commented",
            "absent",
        ] {
            let expected = header_span_by_scan(source, name);
            assert_eq!(spans.get(name).cloned().unwrap_or(0..0), expected, "{name}");
        }
        assert_eq!(&source[spans["plain"].clone()], "[plain]  # a comment");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../unittests.toml");
        let source = std::fs::read_to_string(&path).unwrap();
        let config = Config::load(&path).unwrap();
        let key = regex_free_file_key(&source);
        for entry in &config.entries {
            if !key.contains(&entry.name) {
                assert_eq!(
                    entry.file_span,
                    Some(header_span_by_scan(&source, &entry.name)),
                    "{}",
                    entry.name
                );
            }
        }
    }

    /// The runs of `source` whose table has a `file` key (their span is the key's value).
    fn regex_free_file_key(source: &str) -> Vec<String> {
        let mut table = None;
        let mut with_file = Vec::new();
        for line in source.lines() {
            if let Some(name) = table_header(line) {
                table = Some(name.to_owned());
            } else if line.trim_start().starts_with("file")
                && line.split_once('=').is_some_and(|(key, _)| key.trim() == "file")
                && let Some(name) = &table
            {
                with_file.push(name.clone());
            }
        }
        with_file
    }

    #[test]
    fn the_project_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../unittests.toml");
        let config = Config::load(&path).unwrap();
        let hang = config
            .entries
            .iter()
            .find(|entry| entry.name == "fixture-hang")
            .unwrap();
        assert_eq!(hang.timeout, Some(Duration::from_secs(2)));
        assert_eq!(hang.file, "fixture");
    }

    #[test]
    fn unknown_key() {
        let (line, column, message) = error("[msr]\nfile = \"msr\"\n\n[cpuid]\nsmp = 2\nbogus = 1\n");
        assert_eq!((line, column), (6, 1));
        assert!(
            message.starts_with("[cpuid] bogus: unknown field `bogus`"),
            "{message}"
        );
    }

    #[test]
    fn wrong_types() {
        let (line, column, message) = error("[a]\nfile = 3\n");
        assert_eq!((line, column), (2, 8));
        assert!(
            message.starts_with("[a] file: invalid type: integer"),
            "{message}"
        );

        let (line, _, message) = error("[a]\n[b]\ngroups = [\"x\", 2]\n");
        assert_eq!(line, 3);
        assert!(message.starts_with("[b] groups: invalid type"), "{message}");

        let (_, _, message) = error("[a]\ntimeout = true\n");
        assert!(
            message.starts_with("[a] timeout: invalid type: boolean"),
            "{message}"
        );
        let (_, _, message) = error("[a]\ntimeout = \"soon\"\n");
        assert!(message.starts_with("[a] timeout: invalid duration"), "{message}");
        let (_, _, message) = error("[a]\ntimeout = 18446744073709551615\n");
        assert!(
            message.starts_with("[a] timeout: duration 18446744073709551615 seconds is too long"),
            "{message}"
        );
        let (_, _, message) = error("[a]\ntimeout = \"1e-12\"\n");
        assert!(message.starts_with("[a] timeout: invalid duration"), "{message}");
        let (_, _, message) = error("[a]\ntimeout = -1\n");
        assert!(message.starts_with("[a] timeout: invalid value"), "{message}");
        let (_, _, message) = error("[a]\nqemu_params = \"-foo 'bar\"\n");
        assert!(message.starts_with("[a] qemu_params: cannot split"), "{message}");
        let (_, _, message) = error("[a]\naccel = \"hvf\"\n");
        assert!(
            message.starts_with("[a] accel: unknown variant `hvf`"),
            "{message}"
        );
        let (_, _, message) = error("test = 1\n");
        assert!(message.starts_with("test: invalid type: integer"), "{message}");
    }

    #[test]
    fn smp_zero_and_bad_strings() {
        let (line, column, message) = error("[a]\nfile = \"x\"\nsmp = 0\n");
        assert_eq!((line, column), (3, 7));
        assert!(
            message.starts_with("[a] smp: invalid value: integer `0`"),
            "{message}"
        );
        let (_, _, message) = error("[a]\nsmp = \"many\"\n");
        assert!(
            message.starts_with("[a] smp: invalid value: string \"many\""),
            "{message}"
        );
        let (_, _, message) = error("[a]\nsmp = -3\n");
        assert!(message.contains("smp"), "{message}");
    }

    #[test]
    fn bad_arch_value() {
        let (line, column, message) = error("[a]\narch = \"arm\"\n");
        assert_eq!((line, column), (2, 8));
        assert!(
            message.starts_with("[a] arch: unknown variant `arm`"),
            "{message}"
        );
    }

    #[test]
    fn syntax_error() {
        let (line, _, message) = error("[a]\nfile = \"x\n");
        assert_eq!(line, 2);
        assert!(message.starts_with("[a] file:"), "{message}");
        let (line, _, _) = error("[a]\n[a]\n");
        assert_eq!(line, 2);
    }

    #[test]
    fn errors_display_file_line_column() {
        let error = parse("[a]\nsmp = 0\n").unwrap_err();
        assert!(
            error.to_string().starts_with("unittests.toml:2:7: [a] smp: "),
            "{error}"
        );
        assert_eq!(error.to_string().lines().count(), 1);
    }

    #[test]
    fn smp_resolution() {
        assert_eq!(Smp::Max.resolve(None, 8), 8);
        assert_eq!(Smp::Max.resolve(Some(2), 8), 2);
        assert_eq!(Smp::Count(4).resolve(None, 2), 4);
        assert_eq!(Smp::Count(4).resolve(Some(2), 8), 2);
        assert_eq!(Smp::Count(1).resolve(Some(2), 8), 1);
        // "3-8": the host's count (or MAX_SMP) brought into 3..=8, MAX_SMP still the cap.
        let range = Smp::Range { min: 3, max: 8 };
        assert_eq!(range.resolve(None, 2), 3);
        assert_eq!(range.resolve(None, 5), 5);
        assert_eq!(range.resolve(None, 64), 8);
        assert_eq!(range.resolve(Some(16), 2), 8);
        assert_eq!(range.resolve(Some(4), 64), 4);
        assert_eq!(range.resolve(Some(2), 64), 2);
    }

    #[test]
    fn smp_ranges() {
        let config = parse("[a]\nsmp = \"3-8\"\n[b]\nsmp = \"1-1\"\n").unwrap();
        assert_eq!(config.entries[0].smp, Smp::Range { min: 3, max: 8 });
        assert_eq!(config.entries[1].smp, Smp::Range { min: 1, max: 1 });
        for bad in [
            "8-3",
            "0-8",
            "3-",
            "-8",
            "3-8-9",
            "a-8",
            "3 - 8",
            "+3-8",
            "3-99999999999",
        ] {
            let (line, column, message) = error(&format!("[a]\nsmp = \"{bad}\"\n"));
            assert_eq!((line, column), (2, 7), "{bad}");
            assert!(
                message.starts_with(&format!("[a] smp: invalid value: string \"{bad}\"")),
                "{bad}: {message}"
            );
            assert!(message.contains("\"MIN-MAX\""), "{message}");
        }
    }

    #[test]
    fn smp_shell_words() {
        assert_eq!(Smp::Count(3).shell_word(), "3");
        assert!(Smp::Max.shell_word().contains("_NPROCESSORS_ONLN"));
        let range = Smp::Range { min: 3, max: 8 }.shell_word();
        for host in [1, 3, 5, 8, 64] {
            let script = range.replace(
                "$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)",
                &host.to_string(),
            );
            let output = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("echo {script}"))
                .output()
                .unwrap();
            let expected = (host as u32).clamp(3, 8).to_string();
            assert_eq!(
                String::from_utf8_lossy(&output.stdout).trim(),
                expected,
                "{host}: {range}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("3x").is_err());
        assert_eq!(parse_duration(" 0.5s "), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0.0001m"), Ok(Duration::from_millis(6)));
        assert_eq!(parse_duration("0.0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        // Fraction digits beyond the sixth are ignored.
        assert_eq!(parse_duration("1.0019999999"), Ok(Duration::from_millis(1001)));
        for refused in [
            "-0", "1e-12", "1e19", "0.0001", "0.0009s", ".5", "5.", "inf", "nan", "+5",
        ] {
            assert!(parse_duration(refused).is_err(), "{refused}");
        }
        for too_long in [
            "18446744073709551615",
            "1e19",
            "366d",
            "31536000.001",
            "99999999999999999999999m",
        ] {
            let message = parse_duration(too_long).unwrap_err();
            assert!(
                message.contains("too long") || message.contains("invalid duration"),
                "{too_long}: {message}"
            );
        }
        assert!(
            parse_duration("18446744073709551615")
                .unwrap_err()
                .contains("too long")
        );
        assert!(
            parse_duration("1e-12")
                .unwrap_err()
                .starts_with("invalid duration")
        );
        assert!(
            parse_duration("0.0001")
                .unwrap_err()
                .contains("shorter than a millisecond")
        );
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn timeouts() {
        let config = parse("[a]\ntimeout = 0\n[b]\ntimeout = \"5s\"\n").unwrap();
        assert_eq!(config.entries[0].effective_timeout(None), None);
        assert_eq!(
            config.entries[1].effective_timeout(None),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            config.entries[1].effective_timeout(Some(Duration::from_secs(7))),
            Some(Duration::from_secs(7))
        );
        assert_eq!(config.entries[1].effective_timeout(Some(Duration::ZERO)), None);
    }

    #[test]
    fn arch_inferred_from_directory() {
        let workspace = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(workspace.path().join("tests-x86/xguest")).unwrap();
        std::fs::create_dir_all(workspace.path().join("tests-aarch64/aguest")).unwrap();
        let config = parse(
            "[x]\nfile = \"xguest\"\n[a]\nfile = \"aguest\"\n[missing]\n[bad]\nfile = \"xguest\"\narch = \"aarch64\"\n",
        )
        .unwrap();
        let resolve = |index: usize| config.entries[index].resolve_arch(workspace.path(), &config);
        assert_eq!(resolve(0), Ok(Arch::X86_64));
        assert_eq!(resolve(1), Ok(Arch::Aarch64));
        assert_eq!(
            resolve(2).unwrap_err().to_string(),
            "unittests.toml:5:1: [missing] file: no guest crate 'missing' in tests-x86/ or tests-aarch64/"
        );
        let error = resolve(3).unwrap_err().to_string();
        assert!(
            error.starts_with("unittests.toml:8:8: [bad] arch: 'aarch64' disagrees"),
            "{error}"
        );
    }

    #[test]
    fn requirements_conditions_and_variables() {
        let config = parse(
            r#"
[a]
requires = ["kvm", "root", "device:pci-testdev"]
disabled_if = { accel = "tcg" }
env = { FOO = "bar baz", _X1 = "" }
[b]
disabled = "broken on every host"
disabled_if = { machine = "microvm", accel = "kvm" }
"#,
        )
        .unwrap();
        let entry = &config.entries[0];
        assert_eq!(
            entry.requires,
            [
                Requirement::Kvm,
                Requirement::Root,
                Requirement::Device("pci-testdev".into())
            ]
        );
        assert_eq!(entry.requires[2].to_string(), "device:pci-testdev");
        let condition = &entry.disabled_if[0];
        assert!(condition.holds(Accel::Tcg, "q35", "none") && !condition.holds(Accel::Kvm, "q35", "none"));
        assert_eq!(condition.to_string(), "accel = tcg");
        assert_eq!(
            entry.env,
            [
                ("FOO".to_owned(), "bar baz".to_owned()),
                ("_X1".to_owned(), String::new())
            ]
        );
        let entry = &config.entries[1];
        assert_eq!(entry.disabled.as_deref(), Some("broken on every host"));
        let condition = &entry.disabled_if[0];
        assert!(
            condition.holds(Accel::Kvm, "microvm", "none") && !condition.holds(Accel::Kvm, "q35", "none")
        );
        assert_eq!(condition.to_string(), "accel = kvm and machine = microvm");
        // An erratum of a KVM module holds under kvm on a host with that module only.
        let erratum = Config::parse(
            Path::new("unittests.toml"),
            "[e]\ndisabled_if = [{ accel = \"tcg\" }, { kvm_module = \"kvm_pvm\" }]\n".to_owned(),
        )
        .unwrap()
        .entries[0]
            .disabled_if[1]
            .clone();
        assert!(erratum.holds(Accel::Kvm, "q35", "kvm_pvm"));
        assert!(
            !erratum.holds(Accel::Tcg, "q35", "kvm_pvm") && !erratum.holds(Accel::Kvm, "q35", "kvm_intel")
        );
        assert_eq!(erratum.to_string(), "kvm_module = kvm_pvm");
        // A reason says why, in the SKIP line.
        let explained = Config::parse(
            Path::new("unittests.toml"),
            "[e]\ndisabled_if = { kvm_module = \"kvm_pvm\", reason = \"no Hyper-V\" }\n".to_owned(),
        )
        .unwrap()
        .entries[0]
            .disabled_if[0]
            .clone();
        assert!(explained.holds(Accel::Kvm, "q35", "kvm_pvm"));
        assert_eq!(explained.to_string(), "kvm_module = kvm_pvm: no Hyper-V");
        assert!(TestEntry::ad_hoc("x").requires.is_empty());
    }

    #[test]
    fn bad_requirements_conditions_and_variables() {
        let (line, column, message) = error("[a]\nrequires = [\"kvm\", \"x2apic\"]\n");
        assert_eq!(line, 2);
        assert!(column > 1, "{column}");
        assert!(
            message.starts_with("[a] requires: unknown requirement 'x2apic'"),
            "{message}"
        );
        let (_, _, message) = error("[a]\nrequires = [\"device:\"]\n");
        assert!(message.contains("unknown requirement 'device:'"), "{message}");
        let (_, _, message) = error("[a]\nrequires = \"kvm\"\n");
        assert!(message.starts_with("[a] requires: invalid type"), "{message}");
        let (line, _, message) = error("[a]\ndisabled_if = { accel = \"hvf\" }\n");
        assert_eq!(line, 2);
        assert!(
            message.starts_with("[a] disabled_if: unknown variant `hvf`"),
            "{message}"
        );
        let (_, _, message) = error("[a]\ndisabled_if = { cpu = \"max\" }\n");
        assert!(
            message.starts_with("[a] disabled_if: unknown field `cpu`"),
            "{message}"
        );
        let (_, _, message) = error("[a]\ndisabled_if = { reason = \"why\" }\n");
        assert!(
            message.starts_with("[a] disabled_if: an empty condition"),
            "{message}"
        );
        let (_, _, message) = error("[a]\ndisabled_if = { accel = \"tcg\", reason = \" \" }\n");
        assert!(message.contains("`reason` must be one line of text"), "{message}");
        let (_, _, message) = error("[a]\ndisabled_if = {}\n");
        assert!(
            message.starts_with("[a] disabled_if: an empty condition"),
            "{message}"
        );
        let (_, _, message) = error("[a]\ndisabled_if = { kvm_module = \"kvm_xen\" }\n");
        assert!(
            message.starts_with("[a] disabled_if: unknown variant `kvm_xen`"),
            "{message}"
        );
        let (_, _, message) = error("[a]\ndisabled_if = []\n");
        assert!(
            message.starts_with("[a] disabled_if: an empty array"),
            "{message}"
        );
        let (_, _, message) = error("[a]\ndisabled_if = [{ accel = \"kvm\" }, { cpu = \"max\" }]\n");
        assert!(
            message.starts_with("[a] disabled_if: unknown field `cpu`"),
            "{message}"
        );
        let (_, _, message) = error("[a]\ndisabled_if = { kvm_module = \"kvm_pvm\", accel = \"tcg\" }\n");
        assert!(message.contains("`kvm_module` holds under kvm only"), "{message}");
        let (_, _, message) = error("[a]\nenv = { \"1X\" = \"y\" }\n");
        assert!(
            message.starts_with("[a] env: bad variable name '1X'"),
            "{message}"
        );
        let (_, _, message) = error("[a]\nenv = { X = \"a\\nb\" }\n");
        assert!(
            message.starts_with("[a] env: the value of X must be one line"),
            "{message}"
        );
        let (_, _, message) = error("[a]\nenv = { X = 1 }\n");
        assert!(message.starts_with("[a] env: invalid type: integer"), "{message}");
        let (_, _, message) = error("[a]\ndisabled = true\n");
        assert!(message.starts_with("[a] disabled: invalid type"), "{message}");
    }

    #[test]
    fn positions() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
    }
}
