//! Symbolised crashes: the faulting address a guest prints when it dies (`Unhandled exception
//! ... at ip 0x...` on x86, an `ELR` value on aarch64) resolved against the run's ELF image
//! with addr2line, as `at function (file:line)` lines.

use std::path::Path;

/// How many distinct crash addresses one run keeps.
pub const MAX_ADDRESSES: usize = 4;
/// How many (inlined) frames one address shows at most.
const MAX_FRAMES: usize = 8;

/// Collects distinct crash addresses from a run's lines, in order, at most `MAX_ADDRESSES`.
#[derive(Clone, Debug, Default)]
pub struct CrashAddresses(Vec<u64>);

impl CrashAddresses {
    /// Notes a line's crash address (see [`crate::guest_line::SerialLine`]), if any.
    pub fn observe(&mut self, address: Option<u64>) {
        if self.0.len() < MAX_ADDRESSES
            && let Some(address) = address
            && !self.0.contains(&address)
        {
            self.0.push(address);
        }
    }

    /// The addresses seen.
    pub fn addresses(&self) -> &[u64] {
        &self.0
    }
}

/// `at function (file:line)` lines for `address` in `image`, innermost (inlined) frame first;
/// file names relative to `root` when under it. Falls back to the ELF symbol when the image
/// has no line tables; says so when the address is not in the image at all.
pub fn symbolise(image: &Path, address: u64, root: &Path) -> Result<Vec<String>, String> {
    let loader =
        addr2line::Loader::new(image).map_err(|error| format!("cannot read {}: {error}", image.display()))?;
    let mut lines = Vec::new();
    if let Ok(mut frames) = loader.find_frames(address) {
        while let Ok(Some(frame)) = frames.next() {
            if lines.len() == MAX_FRAMES {
                break;
            }
            let function = frame
                .function
                .as_ref()
                .and_then(|function| function.demangle().ok())
                .map(|name| name.into_owned());
            let location = frame.location.as_ref().and_then(|location| {
                let file = location.file?;
                let file = Path::new(file)
                    .strip_prefix(root)
                    .map_or_else(|_| file.to_owned(), |relative| relative.display().to_string());
                Some(match location.line {
                    Some(line) => format!("{file}:{line}"),
                    None => file,
                })
            });
            match (function, location) {
                (Some(function), Some(location)) => lines.push(format!("at {function} ({location})")),
                (Some(function), None) => lines.push(format!("at {function}")),
                (None, Some(location)) => lines.push(format!("at {location}")),
                (None, None) => {}
            }
        }
    }
    if lines.is_empty() {
        if let Some(symbol) = loader.find_symbol_info(address) {
            let name = addr2line::demangle_auto(symbol.name().into(), None);
            lines.push(format!(
                "at {name}+{:#x} (no line tables in {})",
                address.wrapping_sub(symbol.address()),
                image.display()
            ));
        } else {
            return Err(format!("{address:#x} is not in {}", image.display()));
        }
    }
    Ok(lines)
}

/// The notes for a failed run: for each crash address, `ip 0x...:` and its frames.
pub fn notes(image: &Path, addresses: &[u64], root: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    for address in addresses {
        match symbolise(image, *address, root) {
            Ok(frames) => {
                for (index, frame) in frames.into_iter().enumerate() {
                    notes.push(if index == 0 {
                        format!("{frame} [{address:#x}]")
                    } else {
                        format!("  {frame}")
                    });
                }
            }
            Err(reason) => notes.push(format!("cannot symbolise {address:#x}: {reason}")),
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_addresses_in_order() {
        let mut seen = CrashAddresses::default();
        for address in [
            Some(0x10),
            None,
            Some(0x10),
            Some(0x20),
            Some(0x30),
            Some(0x40),
            Some(0x50),
        ] {
            seen.observe(address);
        }
        assert_eq!(seen.addresses(), [0x10, 0x20, 0x30, 0x40]);
    }

    #[test]
    fn unreadable_images() {
        let error = symbolise(Path::new("/nonexistent/image"), 0x1000, Path::new("/")).unwrap_err();
        assert!(error.starts_with("cannot read /nonexistent/image"), "{error}");
        let notes = notes(Path::new("/nonexistent/image"), &[0x1000], Path::new("/"));
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].starts_with("cannot symbolise 0x1000: cannot read"),
            "{notes:?}"
        );
    }

    #[test]
    fn the_runners_own_code() {
        // The test binary itself is an ELF with line tables: this function's own address
        // resolves to this file.
        let image = std::env::current_exe().unwrap();
        let address = notes as *const () as usize as u64;
        let relative = address.wrapping_sub(load_bias());
        let frames = symbolise(&image, relative, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(frames[0].contains("notes"), "{frames:?}");
        assert!(frames[0].contains("src/symbolise.rs:"), "{frames:?}");
    }

    /// The load bias of this position-independent test binary: where its first segment
    /// (virtual address 0) is mapped.
    fn load_bias() -> u64 {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let executable = std::env::current_exe().unwrap();
        maps.lines()
            .filter(|line| line.ends_with(&*executable.to_string_lossy()))
            .filter_map(|line| u64::from_str_radix(line.split('-').next()?, 16).ok())
            .min()
            .unwrap()
    }
}
