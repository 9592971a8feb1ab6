//! The subtests a guest image declares with `#[vmunit::test]`: their names, read from the
//! image's `vmunit_test_names` section (NUL-terminated `LINE:NAME` records, the line
//! zero-padded), as probe-rs reads embedded-test's; listed in the order they run.

use std::path::Path;

use object::read::ReadCache;
use object::{Object, ObjectSection};
use vmunit_protocol::{SUBTEST_NAMES_SECTION, SubtestRecord};

/// The subtest names in `image`, in the order they run; empty when it declares none. Reads the
/// headers and the one section, not the whole image (megabytes of debug information, read after
/// every run).
pub fn names(image: &Path) -> Result<Vec<String>, String> {
    let opened = std::fs::File::open(image).map_err(|error| format!("{}: {error}", image.display()))?;
    let cache = ReadCache::new(opened);
    let file = object::File::parse(&cache).map_err(|error| format!("{}: {error}", image.display()))?;
    let Some(section) = file.section_by_name(SUBTEST_NAMES_SECTION) else {
        return Ok(Vec::new());
    };
    let data = section
        .data()
        .map_err(|error| format!("{}: {error}", image.display()))?;
    Ok(parse(data))
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
