//! Standalone tests (`make standalone`): one POSIX shell script per unittests.toml entry, with
//! the guest image embedded (gzip, SHA-256 checked before use) and the entry's QEMU
//! configuration baked in, so a test runs on a machine that has only QEMU and a shell.
//!
//! A script honours `QEMU`, `ACCEL`, `TIMEOUT` and extra QEMU arguments on its command line,
//! and prints the same `PASS|FAIL|SKIP name (reason)` line as the runner, exiting 0 when the
//! test passed or was skipped and 1 when it failed (2 when it could not run at all).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use vmunit_protocol::{AbortLine, ExitLine, GuestCode, Label, PREFIX_DELIMITER, Summary};

use crate::config::{
    Accel, Arch, Config, ConfigError, DURATION_FRACTION_DIGITS, MAX_DURATION, Smp, TestEntry, format_duration,
};
use crate::execute::migration;
use crate::plan::{self, SkipRule};

use crate::qemu::{self, ArchProfile, ExitMethod, LaunchSpec, QemuCommand};
use crate::workspace;

/// Placeholders that `build_command` receives and the script replaces at run time.
const IMAGE_PLACEHOLDER: &str = "@VMUNIT_IMAGE@";
const ENVIRONMENT_PLACEHOLDER: &str = "@VMUNIT_ENVIRONMENT@";
const SMP_PLACEHOLDER: u32 = u32::MAX;

/// Why standalone scripts could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// unittests.toml is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A guest image is missing: build the guests first.
    #[error("{}: no such image; build the guests first (make guests)", .0.display())]
    MissingImage(PathBuf),
    /// Reading an image or writing a script failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StandaloneError + '_ {
    move |source| StandaloneError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `<directory>/<name>` for every entry of `config`; returns them.
pub fn write_all(
    workspace: &Path,
    config: &Config,
    directory: &Path,
) -> Result<Vec<PathBuf>, StandaloneError> {
    std::fs::create_dir_all(directory).map_err(io_error(directory))?;
    let mut written = Vec::new();
    for entry in &config.entries {
        let arch = entry.resolve_arch(workspace, config)?;
        let image = workspace::image_path(workspace, arch, &entry.file);
        if !image.is_file() {
            return Err(StandaloneError::MissingImage(image));
        }
        let bytes = std::fs::read(&image).map_err(io_error(&image))?;
        let path = directory.join(&entry.name);
        let script = script(entry, arch, &bytes).map_err(io_error(&path))?;
        std::fs::write(&path, script).map_err(io_error(&path))?;
        make_executable(&path).map_err(io_error(&path))?;
        written.push(path);
    }
    Ok(written)
}

fn make_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

/// The QEMU arguments of `entry` under `accel`, as shell words, with the image, the
/// environment file and (for `smp = "max"`) the CPU count left to the script.
fn shell_arguments(entry: &TestEntry, arch: Arch, accel: Accel) -> String {
    let profile = ArchProfile::of(arch);
    let smp = match entry.smp {
        Smp::Count(count) => count,
        Smp::Max | Smp::Range { .. } => SMP_PLACEHOLDER,
    };
    let command: QemuCommand = qemu::build_command(&LaunchSpec {
        profile,
        program: profile.default_program(),
        machine: entry.machine.as_deref().unwrap_or(profile.default_machine),
        accel,
        accel_properties: None,
        smp,
        image: Path::new(IMAGE_PLACEHOLDER),
        test_args: &entry.test_args,
        qemu_params: &entry.qemu_params,
        extra_args: &[],
        qboot: Some(PathBuf::from(qemu::QBOOT_PATH)),
        environment_file: Some(Path::new(ENVIRONMENT_PLACEHOLDER)),
    });
    let smp_text = SMP_PLACEHOLDER.to_string();
    command
        .args
        .iter()
        .map(|word| match word.as_str() {
            IMAGE_PLACEHOLDER => "\"$image\"".to_owned(),
            ENVIRONMENT_PLACEHOLDER => "\"$environment\"".to_owned(),
            // The file inside an option value (aarch64's `-fw_cfg name=...,file=...`), its
            // commas doubled as QEMU's option syntax wants.
            word if word.contains(ENVIRONMENT_PLACEHOLDER) => word
                .split(ENVIRONMENT_PLACEHOLDER)
                .map(qemu::quote)
                .collect::<Vec<_>>()
                .join("\"$environment_option\""),
            word if word == smp_text => entry.smp.shell_word(),
            word => qemu::quote(word),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The script for one entry: a shell header, then the gzip-compressed image.
pub fn script(entry: &TestEntry, arch: Arch, image: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(image)?;
    let payload = encoder.finish()?;
    let digest = Sha256::digest(&payload);
    let sha256 = digest.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    });
    let profile = ArchProfile::of(arch);
    let machine = entry.machine.as_deref().unwrap_or(profile.default_machine);
    let skip_rules = plan::skip_rules(entry, Some(machine));
    let only_accel = skip_rules
        .iter()
        .find_map(|rule| match rule {
            SkipRule::OnlyUnder(accel) => Some(accel.name()),
            _ => None,
        })
        .unwrap_or("");
    let timeout = entry
        .effective_timeout(None)
        .map_or_else(|| "0".to_owned(), format_duration);
    // Anything but a status device may power off with status 0, the EXIT line carrying the result.
    let exit_method = if matches!(profile.exit_method, ExitMethod::StatusDevice) {
        "status"
    } else {
        "power-off"
    };
    let header = HEADER
        .replace("@RULES@", &rules(entry, &skip_rules))
        .replace("@MIGRATION_FUNCTIONS@", MIGRATION_FUNCTIONS)
        .replace(
            "@MIGRATION_LIMIT@",
            &crate::execute::migration::MIGRATION_LIMIT.as_secs().to_string(),
        )
        .replace(
            "@MIGRATION_RUN@",
            if entry.is_migration_run() { "yes" } else { "" },
        )
        .replace(
            "@UNMIGRATABLE@",
            &qemu::quote(&plan::unmigratable(entry).unwrap_or_default()),
        )
        .replace(
            "@MIGRATION_ENVIRONMENT@",
            &qemu::quote(&format!(
                "{}={}",
                migration::ENVIRONMENT.0,
                migration::ENVIRONMENT.1
            )),
        )
        .replace("@INJECTED_ENVIRONMENT@", migration::AFTER_REPORT_KEY)
        .replace("@ENTRY_ENVIRONMENT@", &entry_environment(entry))
        .replace("@NAME@", &qemu::quote(&entry.name))
        .replace("@ARCH@", arch.name())
        .replace(
            "@GROUPS@",
            &entry
                .groups
                .iter()
                .flat_map(|group| group.split_whitespace())
                .collect::<Vec<_>>()
                .join(" "),
        )
        .replace("@PROGRAM@", &profile.default_program())
        .replace("@ONLY_ACCEL@", only_accel)
        .replace("@TIMEOUT@", &timeout)
        .replace("@MAX_MILLIS@", &MAX_DURATION.as_millis().to_string())
        .replace("@MAX_SHOWN@", &format_duration(MAX_DURATION))
        .replace("@FRACTION_DIGITS@", &DURATION_FRACTION_DIGITS.to_string())
        .replace(
            "@FRACTION_SCALE@",
            &format!("1{}", "0".repeat(DURATION_FRACTION_DIGITS)),
        )
        .replace("@EXIT_METHOD@", exit_method)
        .replace("@EXIT_LABEL@", ExitLine::LABEL)
        .replace("@SUMMARY_LABEL@", Summary::LABEL)
        .replace("@ABORT_LABEL@", AbortLine::<&str>::LABEL)
        .replace("@FAIL_PREFIX@", &format!("{}{PREFIX_DELIMITER}", Label::Fail))
        .replace("@SKIP_PREFIX@", &format!("{}{PREFIX_DELIMITER}", Label::Skip))
        .replace("@CODE_PASS@", &GuestCode::Pass.code().to_string())
        .replace("@CODE_FAILURES@", &GuestCode::Failures.code().to_string())
        .replace("@CODE_ALL_SKIPPED@", &GuestCode::AllSkipped.code().to_string())
        .replace("@CODE_ABORT@", &GuestCode::Abort.code().to_string())
        .replace("@SHA256@", &sha256)
        .replace("@NOT_QEMU_REASON@", crate::classify::NOT_QEMU_REASON)
        .replace("@KVM_ARGUMENTS@", &shell_arguments(entry, arch, Accel::Kvm))
        .replace("@TCG_ARGUMENTS@", &shell_arguments(entry, arch, Accel::Tcg));
    // The payload starts at a fixed, zero-padded byte offset written into the header.
    let width = 10;
    let placeholder = format!("@{:0>width$}@", 0, width = width - 2);
    // `tail -c +N` counts from 1, and a newline ends the header.
    let offset = header.len() + 2;
    let header = header.replace(&placeholder, &format!("{offset:0>width$}"));
    let mut script = header.into_bytes();
    script.push(b'\n');
    script.extend_from_slice(&payload);
    Ok(script)
}

/// Shell lines that skip the run as the runner would: the plan's skip rules
/// ([`plan::skip_rules`]) for the entry's machine, each tested where the script runs (the
/// accelerator, /dev/kvm, root, QEMU's devices). `OnlyUnder` is tested earlier, by the header
/// (`ONLY_ACCEL`).
fn rules(entry: &TestEntry, rules: &[SkipRule]) -> String {
    let mut lines = String::new();
    if !entry.expect.is_empty() {
        lines.push_str("result SKIP 'needs the runner: its expect script talks to the console' 0\n");
    }
    for rule in rules {
        let line = match rule {
            SkipRule::Always(reason) => format!("result SKIP {} 0", qemu::quote(reason)),
            SkipRule::UnderAccel { accel, reason } => format!(
                "[ \"$accel_name\" = {} ] && result SKIP {} 0",
                accel.name(),
                qemu::quote(reason)
            ),
            SkipRule::UnderKvmModule { module, reason } => format!(
                "[ \"$accel_name\" = kvm ] && [ \"$kvm_module\" = {} ] && result SKIP {} 0",
                module.name(),
                qemu::quote(reason)
            ),
            SkipRule::OnlyUnder(_) => continue,
            SkipRule::Kvm => concat!(
                "[ \"$accel_name\" = kvm ] || result SKIP \"requires kvm, but ACCEL=$accel_name\" 0\n",
                "{ [ -r /dev/kvm ] && [ -w /dev/kvm ]; } || result SKIP 'requires kvm, but /dev/kvm is not usable' 0"
            )
            .to_owned(),
            SkipRule::Root => "[ \"$(id -u)\" = 0 ] || result SKIP 'requires root, but the test is not root' 0".to_owned(),
            SkipRule::Device(device) => format!(
                "\"$qemu\" -device help 2>/dev/null | grep -q '\"{device}\"' || result SKIP \"requires device {device}, which $qemu lacks\" 0"
            ),
        };
        lines.push_str(&line);
        lines.push('\n');
    }
    lines
}

/// The table's `env` pairs as `printf` lines appended to the guest environment file.
fn entry_environment(entry: &TestEntry) -> String {
    entry
        .env
        .iter()
        .map(|(key, value)| format!("    printf '%s\\n' {}\n", qemu::quote(&format!("{key}={value}"))))
        .collect()
}

/// The standalone script's shell part; `@...@` fields are filled in by [`script`] (the guest's
/// line labels and result codes from the protocol).
const HEADER: &str = r#"#!/bin/sh
# vmunit standalone test @NAME@, generated by `make standalone` from unittests.toml: do not edit.
# Usage: ./@NAME@ [EXTRA QEMU ARGUMENTS...]   Environment: QEMU, ACCEL (kvm|tcg), TIMEOUT (90, 1.5s, 2m; 0: none),
# MIGRATION (yes: migrate once after the first report line, as the runner's --migrate)
# Prints `PASS|FAIL|SKIP @NAME@ (reason)`; exits 0 (passed or skipped), 1 (failed), 2 (could not run).
# The guest image follows the script, gzip-compressed, at byte PAYLOAD_OFFSET.
# vmunit-groups: @GROUPS@
set -u
NAME=@NAME@
ONLY_ACCEL='@ONLY_ACCEL@'
MIGRATION_RUN='@MIGRATION_RUN@'
UNMIGRATABLE=@UNMIGRATABLE@
TIMEOUT_TEXT=${TIMEOUT:-@TIMEOUT@}
EXIT_METHOD='@EXIT_METHOD@'
PAYLOAD_SHA256='@SHA256@'
PAYLOAD_OFFSET=@00000000@
QBOOT=/usr/share/qemu/qboot.rom

result() { # result VERDICT REASON EXIT_STATUS
    printf '%s %s (%s)\n' "$1" "$NAME" "$2"
    exit "$3"
}

GUEST_ARCH=@ARCH@
# Like the runner: KVM only for a guest of the host's own architecture, and only when usable.
host_arch=$(uname -m 2>/dev/null)
[ "$host_arch" = arm64 ] && host_arch=aarch64
accel=${ACCEL:-}
if [ -z "$accel" ]; then
    if [ "$host_arch" = "$GUEST_ARCH" ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then accel=kvm; else accel=tcg; fi
fi
accel_name=${accel%%,*}
case "$accel_name" in kvm | tcg) ;; *) result FAIL "ACCEL=$accel_name is neither kvm nor tcg" 2 ;; esac
if [ -n "$ONLY_ACCEL" ] && [ "$accel_name" != "$ONLY_ACCEL" ]; then
    result SKIP "$ONLY_ACCEL only, but ACCEL=$accel_name" 0
fi
# The runner's duration grammar (config::parse_duration): digits, an optional fraction and an
# optional unit s, m, h or d; whole milliseconds rounded down, fraction digits past the
# @FRACTION_DIGITS@th ignored; not 0 ms unless written as zero, at most @MAX_SHOWN@.
duration_millis() { # duration_millis TEXT: sets millis, or prints why TEXT is refused
    text=$1
    text=${text#"${text%%[![:space:]]*}"}
    text=${text%"${text##*[![:space:]]}"}
    number=$text
    unit=1000
    case "$number" in
        *s) number=${number%s} ;;
        *m) number=${number%m}; unit=60000 ;;
        *h) number=${number%h}; unit=3600000 ;;
        *d) number=${number%d}; unit=86400000 ;;
    esac
    case "$number" in
        *.*) whole=${number%%.*}; digits=${number#*.} ;;
        *) whole=$number; digits='' ;;
    esac
    invalid="invalid duration '$text', expected seconds or a number with s, m, h or d"
    case "$number" in *.) echo "$invalid"; return 1 ;; esac
    case "$whole" in '' | *[!0-9]*) echo "$invalid"; return 1 ;; esac
    case "$digits" in *[!0-9]*) echo "$invalid"; return 1 ;; esac
    too_long="duration '$text' is too long: at most @MAX_SHOWN@"
    whole=${whole#"${whole%%[!0]*}"}
    [ ${#whole} -gt 12 ] && { echo "$too_long"; return 1; }
    whole=${whole:-0}
    [ "$whole" -gt $((@MAX_MILLIS@ / unit)) ] && { echo "$too_long"; return 1; }
    fraction=''
    scale=1
    while [ -n "$digits" ] && [ "$scale" -lt @FRACTION_SCALE@ ]; do
        rest=${digits#?}
        fraction=$fraction${digits%"$rest"}
        digits=$rest
        scale=$((scale * 10))
    done
    fraction=${fraction#"${fraction%%[!0]*}"}
    millis=$((whole * unit + ${fraction:-0} * unit / scale))
    [ "$millis" -gt @MAX_MILLIS@ ] && { echo "$too_long"; return 1; }
    if [ "$millis" -eq 0 ]; then
        case "$number" in *[1-9]*) echo "duration '$text' is shorter than a millisecond: write 0 for no timeout"; return 1 ;; esac
    fi
    return 0
}
refusal=$(duration_millis "$TIMEOUT_TEXT") || result FAIL "TIMEOUT: $refusal" 2
duration_millis "$TIMEOUT_TEXT"
timeout_millis=$millis
# As the runner shows a duration: 90s, 0.5s.
timeout_seconds=$((timeout_millis / 1000))
if [ $((timeout_millis % 1000)) -ne 0 ]; then
    timeout_seconds=$timeout_seconds.$(printf '%03d' $((timeout_millis % 1000)))
    timeout_seconds=${timeout_seconds%0}
    timeout_seconds=${timeout_seconds%0}
fi
qemu=${QEMU:-@PROGRAM@}
command -v "$qemu" >/dev/null 2>&1 || result FAIL "$qemu not found: install QEMU" 2
kvm_module=none
for module in kvm_intel kvm_amd kvm_pvm; do
    [ -d "/sys/module/$module" ] && kvm_module=$module
done
@RULES@
# A migration run migrates when the guest asks; MIGRATION=yes (the runner's --migrate) migrates
# any other run once, after its first report line, unless it cannot migrate.
migration_mode=''
if [ -n "$MIGRATION_RUN" ]; then
    migration_mode=request
else
    case "${MIGRATION:-}" in
        '' | no) ;;
        yes)
            [ -n "$UNMIGRATABLE" ] && result SKIP "$UNMIGRATABLE" 0
            migration_mode=injected
            ;;
        *) result FAIL "MIGRATION: '$MIGRATION' is neither yes nor no" 2 ;;
    esac
fi
temporary=$(mktemp -d "${TMPDIR:-/tmp}/vmunit.XXXXXX") || result FAIL "cannot create a temporary directory" 2
qemu_pid=''
watchdog_pid=''
migration_pids=''
cleanup() {
    [ -n "$qemu_pid" ] && kill -KILL "$qemu_pid" 2>/dev/null
    for pid in $migration_pids; do kill -KILL "$pid" 2>/dev/null; done
    [ -n "$watchdog_pid" ] && kill -TERM "$watchdog_pid" 2>/dev/null
    rm -rf "$temporary"
}
trap cleanup EXIT
trap 'cleanup; trap - EXIT; exit 130' INT
trap 'cleanup; trap - EXIT; exit 143' TERM HUP

image=$temporary/image
environment=$temporary/environment
environment_option=$(printf '%s\n' "$environment" | sed 's/,/,,/g')
tail -c +"$PAYLOAD_OFFSET" "$0" > "$image.gz" || result FAIL "cannot read the embedded image" 2
if command -v sha256sum >/dev/null 2>&1; then
    sum=$(sha256sum < "$image.gz")
elif command -v shasum >/dev/null 2>&1; then
    sum=$(shasum -a 256 < "$image.gz")
else
    result FAIL "neither sha256sum nor shasum is installed: cannot verify the embedded image" 2
fi
[ "${sum%% *}" = "$PAYLOAD_SHA256" ] || result FAIL "the embedded image is corrupt (SHA-256 mismatch): copy the file again" 2
gzip -dc < "$image.gz" > "$image" || result FAIL "the embedded image does not decompress" 2

{
    printf 'ACCEL=%s\n' "$accel_name"
    printf 'HOST_KERNEL=%s\n' "$(uname -r)"
    printf 'HOST_KVM_MODULE=%s\n' "$kvm_module"
    printf 'HOST_TIME=%s\n' "$(date +%s)"
    case "$migration_mode" in
        request) printf '%s\n' @MIGRATION_ENVIRONMENT@ ;;
        injected) printf '%s\n' @INJECTED_ENVIRONMENT@=1 ;;
    esac
@ENTRY_ENVIRONMENT@} > "$environment"

# The caller's extra QEMU arguments come last, after the baked-in ones; -bios is dropped
# where this machine has no qboot.
extra_count=$#
if [ "$accel_name" = kvm ]; then
    set -- "$@" @KVM_ARGUMENTS@
else
    set -- "$@" @TCG_ARGUMENTS@
fi
total=$#
index=0
skip_next=''
for word in "$@"; do
    index=$((index + 1))
    [ "$index" -le "$extra_count" ] && continue
    [ "$index" -gt "$total" ] && break
    if [ -n "$skip_next" ]; then skip_next=''; continue; fi
    if [ "$word" = -bios ] && [ ! -f "$QBOOT" ]; then skip_next=yes; continue; fi
    set -- "$@" "$word"
done
index=0
for word in "$@"; do
    index=$((index + 1))
    [ "$index" -gt "$extra_count" ] && break
    set -- "$@" "$word"
done
shift "$total"

output=$temporary/output
errors=$temporary/errors
# QEMU and the watchdog die with this script, even by SIGKILL, where util-linux's setpriv can
# ask for it (PR_SET_PDEATHSIG).
dies_with_parent=''
setpriv --pdeathsig KILL true 2>/dev/null && dies_with_parent='setpriv --pdeathsig KILL --'
# The timeout: a watchdog that marks it (a fraction of a second needs a sleep that takes one).
timed_out=$temporary/timed-out
watch() {
    if [ "$timeout_millis" -gt 0 ]; then
        $dies_with_parent sh -c 'trap "kill \$sleeper 2>/dev/null; exit 0" TERM
            '"$dies_with_parent"' sleep "$1" & sleeper=$!
            wait "$sleeper" && : > "$2"' watchdog "$timeout_seconds" "$timed_out" < /dev/null > /dev/null 2>&1 &
        watchdog_pid=$!
    fi
}
ended=''
migration_failure=''
migrations=0
if [ -n "$migration_mode" ]; then
@MIGRATION_FUNCTIONS@
    run_migrating "$@"
else
    $dies_with_parent "$qemu" "$@" < /dev/null > "$output" 2> "$errors" &
    qemu_pid=$!
    watch
    while kill -0 "$qemu_pid" 2>/dev/null; do
        # QEMU pauses a VM after a KVM internal error instead of exiting: fail at once.
        if grep -q 'KVM internal error' "$errors" 2>/dev/null; then ended=hypervisor; break; fi
        if [ -e "$timed_out" ]; then ended=timeout; break; fi
        sleep 0.02 2>/dev/null || sleep 1
    done
fi
if [ -n "$ended" ]; then
    kill -TERM "$qemu_pid" 2>/dev/null
    sleep 1
    kill -KILL "$qemu_pid" 2>/dev/null
fi
wait "$qemu_pid"
status=$?
qemu_pid=''
if [ -n "$migration_mode" ]; then
    # No QEMU outlives the run; the output is each QEMU's in turn, with the migrations between.
    for pid in $migration_pids; do kill -KILL "$pid" 2>/dev/null; done
    [ "$ended" = migration ] && printf 'vmunit: migration %s: failed: %s\n' "$migrations" "$migration_failure" >> "$temporary/notes-$migrations"
    : > "$output"
    : > "$errors"
    index=0
    while [ "$index" -le "$migrations" ]; do
        [ -f "$temporary/notes-$index" ] && cat "$temporary/notes-$index" >> "$output"
        cat "$temporary/output-$index" >> "$output" 2>/dev/null
        cat "$temporary/errors-$index" >> "$errors" 2>/dev/null
        index=$((index + 1))
    done
fi
tr -d '\r' < "$output"
cat "$errors" >&2
if [ "$migration_mode" = injected ] && ! grep -a -q '^MIGRATE: NOW' "$output"; then
    echo "vmunit: --migrate: not migrated: the guest printed no report line" >&2
fi

case "$ended" in
    hypervisor) result FAIL "hypervisor error: $(grep -m 1 'KVM internal error' "$errors")" 1 ;;
    timeout) result FAIL "timeout; duration=${timeout_seconds}s" 1 ;;
    migration) result FAIL "migration failed: $migration_failure" 1 ;;
esac
exit_line=$(grep -a '^@EXIT_LABEL@' "$output" | head -n 1 | tr -d '\r')
if [ -z "$exit_line" ]; then
    [ "$status" -gt 128 ] && result FAIL "terminated on signal $((status - 128))" 1
    if [ "$status" -eq 0 ] && [ ! -s "$output" ] && [ ! -s "$errors" ]; then
        "$qemu" --version 2>/dev/null | grep -q QEMU || result FAIL "QEMU error: @NOT_QEMU_REASON@" 1
    fi
    machine=$(sed -n 's/.*unsupported machine type: "\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$errors" | head -n 1)
    [ -n "$machine" ] && result FAIL "QEMU error: QEMU rejected machine $machine" 1
    if [ "$status" -eq 0 ]; then
        [ "$EXIT_METHOD" = status ] && result FAIL "triple fault or reset: QEMU exited with status 0 and no EXIT line" 1
        result FAIL "reset or power-off: QEMU exited with status 0 and no EXIT line" 1
    fi
    result FAIL "QEMU error: QEMU exited with status $status and no EXIT line: $(tail -n 1 "$errors")" 1
fi
exit_status=${exit_line#@EXIT_LABEL@}
case "$exit_status" in '' | *[!0-9]*) result FAIL "QEMU error: malformed line '$exit_line'" 1 ;; esac
if [ "$status" -ne "$exit_status" ] && { [ "$EXIT_METHOD" = status ] || [ "$status" -ne 0 ]; }; then
    result FAIL "QEMU error: QEMU exited with status $status but the guest printed '$exit_line'" 1
fi
summary=$(grep -a '^@SUMMARY_LABEL@ ' "$output" | tail -n 1 | tr -d '\r')
summary=${summary#@SUMMARY_LABEL@ }
failures=$(grep -a -c '^@FAIL_PREFIX@' "$output")
case $((exit_status >> 1)) in
    @CODE_PASS@)
        [ "$failures" -gt 0 ] && result FAIL "exit code 0 but $failures FAIL lines printed" 1
        if [ "$migration_mode" = request ] && ! grep -a -q -E '^MIGRATE: (NOW|SKIP|BEGIN|END)' "$output"; then
            result FAIL "migration failed: the guest never asked to migrate (no MIGRATE: NOW, BEGIN or SKIP line)" 1
        fi
        result PASS "$summary" 0
        ;;
    @CODE_FAILURES@) result FAIL "$(printf '%s\n' "$summary" | sed -n 's/.*, \([0-9]* unexpected failures\).*/\1/p')" 1 ;;
    @CODE_ALL_SKIPPED@)
        skip=$(grep -a '^@SKIP_PREFIX@' "$output" | tail -n 1 | tr -d '\r')
        result SKIP "${skip#@SKIP_PREFIX@}" 0
        ;;
    @CODE_ABORT@) result FAIL "$(grep -a -m 1 -e '^@ABORT_LABEL@ ' -e '^Unhandled exception' "$output" | tr -d '\r')" 1 ;;
    *) result FAIL "exit code $((exit_status >> 1))" 1 ;;
esac
exit 2"#;

/// The standalone script's migration (README "Migration"), defined only when the run migrates.
const MIGRATION_FUNCTIONS: &str = r#"    # Live migration (README "Migration"), as the runner does it, with nothing but QEMU and the
    # shell: each QEMU gets its QMP monitor on a pair of named pipes (`-chardev pipe`: QEMU opens
    # NAME.in and NAME.out read-write, so no open blocks) and its serial input on a named pipe. On
    # `MIGRATE: NOW` a destination QEMU starts with `-incoming unix:...`, the source gets `migrate`,
    # `query-migrate` is polled until `completed` and the destination's `query-status` until
    # `running` (within @MIGRATION_LIMIT@ s), the source quits and the guest gets its byte; between
    # `MIGRATE: BEGIN` and `MIGRATE: END` it migrates again and again. Every QEMU and pipe reader is
    # in $migration_pids, which the cleanup trap kills.
    nap() { sleep 0.02 2>/dev/null || sleep 1; }
    alive() { kill -0 "$1" 2>/dev/null; }
    start_qemu() { # start_qemu INDEX INCOMING-URI|'' QEMU-ARGUMENTS...: sets started_pid
        index=$1
        incoming=$2
        shift 2
        mkfifo "$temporary/input-$index" "$temporary/qmp-$index.in" "$temporary/qmp-$index.out" || return 1
        qmp_path=$(printf '%s\n' "$temporary/qmp-$index" | sed 's/,/,,/g')
        if [ -n "$incoming" ]; then set -- "$@" -incoming "$incoming"; fi
        $dies_with_parent "$qemu" "$@" -chardev "pipe,id=vmunit-qmp,path=$qmp_path" -mon chardev=vmunit-qmp,mode=control \
            <> "$temporary/input-$index" > "$temporary/output-$index" 2> "$temporary/errors-$index" &
        started_pid=$!
        migration_pids="$migration_pids $started_pid"
        $dies_with_parent cat "$temporary/qmp-$index.out" > "$temporary/qmp-$index.log" 2> /dev/null < /dev/null &
        migration_pids="$migration_pids $!"
        return 0
    }
    qmp_sequence=0
    reply=''
    qmp() { # qmp INDEX PID COMMAND [ARGUMENTS]: sends a QMP command, sets reply to QEMU's answer
        qmp_sequence=$((qmp_sequence + 1))
        id=vmunit-$qmp_sequence
        if [ -n "${4:-}" ]; then
            printf '{"execute": "%s", "arguments": %s, "id": "%s"}\n' "$3" "$4" "$id" 1<> "$temporary/qmp-$1.in"
        else
            printf '{"execute": "%s", "id": "%s"}\n' "$3" "$id" 1<> "$temporary/qmp-$1.in"
        fi
        give_up=$(($(date +%s) + 10))
        while :; do
            reply=$(grep -a -m 1 "\"$id\"" "$temporary/qmp-$1.log" 2> /dev/null)
            [ -n "$reply" ] && return 0
            alive "$2" || { reply="QEMU exited"; return 1; }
            [ "$(date +%s)" -ge "$give_up" ] && { reply="no answer in 10 s"; return 1; }
            nap
        done
    }
    qmp_ready() { # qmp_ready INDEX PID: waits for QEMU's QMP greeting and negotiates capabilities
        give_up=$(($(date +%s) + 20))
        until grep -a -q '"QMP"' "$temporary/qmp-$1.log" 2> /dev/null; do
            alive "$2" || return 1
            [ "$(date +%s)" -ge "$give_up" ] && return 1
            nap
        done
        qmp "$1" "$2" qmp_capabilities
    }
    qmp_error() { printf '%s\n' "$reply" | sed -n 's/.*"desc": *"\(.*\)".*/\1/p'; }
    json_status() { printf '%s\n' "$reply" | grep -o '"status": *"[a-z-]*"' | head -n 1 | sed 's/.*"\([a-z-]*\)"$/\1/'; }
    destination_exit() { # sets migration_failure (and returns 0) when the destination died
        alive "$destination_pid" && return 1
        wait "$destination_pid"
        migration_failure="the destination QEMU exited (status $?) before the VM ran on it; its stderr is above"
        return 0
    }
    migrate_now() { # migrate_now QEMU-ARGUMENTS...: migrates QEMU $current's VM to a new QEMU, which becomes $current; 1 when it failed (migration_failure says why), 2 on the timeout
        migrations=$((migrations + 1))
        next=$migrations
        stream=$temporary/stream-$next
        started_at=$(date +%s)
        give_up=$((started_at + @MIGRATION_LIMIT@))
        notes=$temporary/notes-$next
        printf 'vmunit: migration %s: started: destination QEMU with -incoming unix:%s\n' "$next" "$stream" > "$notes"
        if ! start_qemu "$next" "unix:$stream" "$@"; then
            migration_failure="cannot start the destination QEMU $qemu"
            return 1
        fi
        destination_pid=$started_pid
        until [ -S "$stream" ]; do
            [ -e "$timed_out" ] && return 2
            destination_exit && return 1
            [ "$(date +%s)" -ge "$give_up" ] && { migration_failure="not completed within @MIGRATION_LIMIT@s"; return 1; }
            nap
        done
        # A reply from the destination's monitor: its init, and so its listening, is done.
        qmp_ready "$next" "$destination_pid" && qmp "$next" "$destination_pid" query-status || {
            destination_exit || migration_failure="the destination's QMP monitor does not answer: $reply"
            return 1
        }
        if [ -z "$current_ready" ]; then
            qmp_ready "$current" "$current_pid" || { migration_failure="the source's QMP monitor does not answer: $reply"; return 1; }
            current_ready=yes
        fi
        if ! qmp "$current" "$current_pid" migrate "{\"uri\": \"unix:$stream\"}" || [ -n "$(qmp_error)" ]; then
            migration_failure="the source refused to migrate: $(qmp_error) $reply"
            return 1
        fi
        while :; do
            nap
            [ -e "$timed_out" ] && return 2
            [ "$(date +%s)" -ge "$give_up" ] && { migration_failure="not completed within @MIGRATION_LIMIT@s"; return 1; }
            destination_exit && return 1
            qmp "$current" "$current_pid" query-migrate || { migration_failure="query-migrate on the source: $reply"; return 1; }
            case $(json_status) in
                completed) break ;;
                failed | cancelled)
                    sleep 0.1 2> /dev/null
                    destination_exit || migration_failure="the source says $(json_status): $(printf '%s\n' "$reply" | sed -n 's/.*"error-desc": *"\([^"]*\)".*/\1/p')"
                    return 1
                    ;;
            esac
        done
        while :; do
            qmp "$next" "$destination_pid" query-status || {
                destination_exit || migration_failure="query-status on the destination: $reply"
                return 1
            }
            [ "$(json_status)" = running ] && break
            [ -e "$timed_out" ] && return 2
            [ "$(date +%s)" -ge "$give_up" ] && { migration_failure="not completed within @MIGRATION_LIMIT@s"; return 1; }
            nap
        done
        qmp "$current" "$current_pid" quit
        quit_by=$(($(date +%s) + 5))
        while alive "$current_pid" && [ "$(date +%s)" -lt "$quit_by" ]; do nap; done
        kill -KILL "$current_pid" 2> /dev/null
        wait "$current_pid"
        printf 'vmunit: migration %s: completed in %ss\n' "$next" $(($(date +%s) - started_at)) >> "$notes"
        printf 'vmunit: migration %s: the guest runs on the destination\n' "$next" >> "$notes"
        current=$next
        current_pid=$destination_pid
        current_ready=yes
        qemu_pid=$current_pid
        return 0
    }
    count() { # count WORD: the `MIGRATE: WORD` lines of the current QEMU
        counted=$(grep -a -c "^MIGRATE: $1" "$temporary/output-$current" 2> /dev/null)
        echo "${counted:-0}"
    }
    send_key() { printf '\n' 1<> "$temporary/input-$current"; }
    run_migrating() { # run_migrating QEMU-ARGUMENTS...: runs the test, migrating when the guest asks; sets ended
        current=0
        current_ready=''
        migrations=0
        start_qemu 0 '' "$@" || result FAIL "cannot create the migration pipes in $temporary" 2
        current_pid=$started_pid
        qemu_pid=$current_pid
        watch
        nows=0
        begins=0
        ends=0
        continuous=''
        since_begin=0
        while alive "$current_pid"; do
            if grep -q 'KVM internal error' "$temporary/errors-$current" 2> /dev/null; then ended=hypervisor; break; fi
            if [ -e "$timed_out" ]; then ended=timeout; break; fi
            [ "$(count BEGIN)" -gt "$begins" ] && { begins=$(count BEGIN); continuous=yes; since_begin=0; }
            # END is answered once a migration completed since BEGIN.
            if [ -n "$continuous" ] && [ "$since_begin" -gt 0 ] && [ "$(count END)" -gt "$ends" ]; then
                ends=$(count END)
                continuous=''
                send_key
            elif [ -n "$continuous" ] || [ "$(count NOW)" -gt "$nows" ]; then
                nows=$(count NOW)
                source_output=$temporary/output-$current
                source_ends=$ends
                migrate_now "$@"
                case $? in 1) ended=migration; break ;; 2) ended=timeout; break ;; esac
                since_begin=$((since_begin + 1))
                nows=0
                begins=0
                ends=0
                if [ -z "$continuous" ]; then
                    send_key
                elif [ "$(grep -a -c '^MIGRATE: END' "$source_output")" -gt "$source_ends" ]; then
                    # END printed on the source as the VM left it.
                    continuous=''
                    send_key
                else
                    sleep 0.1 2> /dev/null || sleep 1
                fi
            else
                nap
            fi
        done
    }"#;
