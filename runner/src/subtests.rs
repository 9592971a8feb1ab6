//! The subtests a guest image declares with `#[vmunit::test]`: their names, read from the
//! image's `vmunit_test_names` section (NUL-terminated `LINE:NAME` records, the line
//! zero-padded), as probe-rs reads embedded-test's; listed in the order they run.

use std::path::Path;

use object::elf::{FileHeader32, FileHeader64};
use object::read::ReadCache;
use object::read::elf::{FileHeader, SectionHeader};
use object::{Endianness, FileKind};
use vmunit_protocol::{SUBTEST_NAMES_SECTION, SubtestRecord};

/// The subtest names in `image`, in the order they run; empty when it declares none. Reads the
/// headers and the one section, not the whole image (megabytes of debug information) nor its
/// symbol table: this runs after every run.
pub fn names(image: &Path) -> Result<Vec<String>, String> {
    let shown = |error: &dyn std::fmt::Display| format!("{}: {error}", image.display());
    let opened = std::fs::File::open(image).map_err(|error| shown(&error))?;
    let cache = ReadCache::new(opened);
    let data = match FileKind::parse(&cache).map_err(|error| shown(&error))? {
        FileKind::Elf64 => section_data::<FileHeader64<Endianness>>(&cache),
        FileKind::Elf32 => section_data::<FileHeader32<Endianness>>(&cache),
        other => return Err(shown(&format!("not an ELF image ({other:?})"))),
    }
    .map_err(|error| shown(&error))?;
    Ok(data.map(parse).unwrap_or_default())
}

/// The contents of the image's subtest names section, if it has one.
fn section_data<Elf: FileHeader<Endian = Endianness>>(
    data: &ReadCache<std::fs::File>,
) -> object::Result<Option<&[u8]>> {
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    match sections.section_by_name(endian, SUBTEST_NAMES_SECTION.as_bytes()) {
        Some((_, section)) => section.data(endian, data).map(Some),
        None => Ok(None),
    }
}

/// Splits the NUL-terminated records (alignment padding yields empty pieces), orders them by
/// their zero-padded line, and keeps the names.
fn parse(data: &[u8]) -> Vec<String> {
    let mut records: Vec<String> = data
        .split(|&byte| byte == 0)
        .filter(|record| !record.is_empty())
        .map(|record| String::from_utf8_lossy(record).into_owned())
        .collect();
    records.sort();
    records
        .iter()
        .map(|record| match SubtestRecord::parse(record) {
            Some(parsed) => parsed.name.to_owned(),
            None => record.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn names_are_nul_terminated_and_padding_is_skipped() {
        assert_eq!(
            parse(b"00000120:paged\x0000000020:heap\x00\x00\x0000000200:bitmap\x00"),
            ["heap", "paged", "bitmap"]
        );
        assert!(parse(b"").is_empty());
    }
}
