//! The test's arguments: the kernel command line (`-append`) split into words.

/// The most arguments a test receives.
pub const MAX_ARGS: usize = 64;

/// The words of a command line: at most [`MAX_ARGS`].
pub type Arguments<'a> = heapless::Vec<&'a str, MAX_ARGS>;

/// Splits `line` at ASCII whitespace into at most [`MAX_ARGS`] words.
pub fn split(line: &str) -> Arguments<'_> {
    line.split_ascii_whitespace().take(MAX_ARGS).collect()
}

/// The value of the first `key=value` argument for `key`.
pub fn value<'a>(args: &[&'a str], key: &str) -> Option<&'a str> {
    args.iter().find_map(|word| value_of(word, key))
}

/// The value in `word` if it reads `key=value` (arguments and environment lines alike).
pub fn value_of<'a>(word: &'a str, key: &str) -> Option<&'a str> {
    word.strip_prefix(key)?.strip_prefix('=')
}

/// Whether `name` matches the glob `pattern`: `*` any run of characters, `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    glob(pattern.as_bytes(), name.as_bytes(), false)
}

/// [`glob_match`] on bytes; `spaces_as_underscores`: a space in `name` matches `_`.
fn glob(pattern: &[u8], name: &[u8], spaces_as_underscores: bool) -> bool {
    let again = |pattern: &[u8], name: &[u8]| glob(pattern, name, spaces_as_underscores);
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => again(&pattern[1..], name) || (!name.is_empty() && again(pattern, &name[1..])),
        (Some(b'?'), Some(_)) => again(&pattern[1..], &name[1..]),
        (Some(&expected), Some(&found))
            if expected == found || (spaces_as_underscores && found == b' ' && expected == b'_') =>
        {
            again(&pattern[1..], &name[1..])
        }
        _ => false,
    }
}

/// kvm-unit-tests' `test_wanted`: whether the case `name` (its spaces read as underscores)
/// runs under `filters`, the arguments without `=`: a `-glob` one matching it excludes it,
/// and where there are positive globs one of them must match it.
pub fn test_wanted(name: &str, filters: &[&str]) -> bool {
    let mut positive = false;
    let mut matched = false;
    for filter in filters.iter().filter(|filter| !filter.contains('=')) {
        if let Some(excluded) = filter.strip_prefix('-') {
            if glob(excluded.as_bytes(), name.as_bytes(), true) {
                return false;
            }
        } else {
            positive = true;
            matched |= glob(filter.as_bytes(), name.as_bytes(), true);
        }
    }
    !positive || matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_any_whitespace() {
        let words = split("  a b\tc=d \n e ");
        assert_eq!(words.as_slice(), &["a", "b", "c=d", "e"]);
        assert!(split("   ").is_empty());
    }

    #[test]
    fn keeps_at_most_the_maximum() {
        let line = "x ".repeat(MAX_ARGS + 5);
        assert_eq!(split(&line).len(), MAX_ARGS);
    }

    #[test]
    fn test_wanted_is_kvm_unit_tests_filter() {
        assert!(test_wanted("sel cr0 bug", &[]));
        assert!(test_wanted("sel cr0 bug", &["smp=2"]));
        assert!(test_wanted("sel cr0 bug", &["sel_cr0_*"]));
        assert!(!test_wanted("sel cr0 bug", &["-sel_cr0_*"]));
        assert!(!test_wanted("null", &["vmrun"]));
        assert!(!test_wanted("vmrun", &["vmrun", "-vm*"]));
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_match("heap", "heap"));
        assert!(!glob_match("heap", "heap_big"));
        assert!(glob_match("heap*", "heap_big"));
        assert!(glob_match("*big", "heap_big"));
        assert!(glob_match("h?ap", "heap"));
        assert!(!glob_match("h?ap", "hap"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn finds_key_values() {
        let args = ["smp=2", "mem", "mem=128"];
        assert_eq!(value(&args, "mem"), Some("128"));
        assert_eq!(value(&args, "smp"), Some("2"));
        assert_eq!(value(&args, "sm"), None);
        assert_eq!(
            value_of("HOST_KVM_MODULE=kvm_pvm", "HOST_KVM_MODULE"),
            Some("kvm_pvm")
        );
        assert_eq!(value_of("EMPTY=", "EMPTY"), Some(""));
        assert_eq!(value_of("ACCEL=kvm", "ACC"), None);
    }
}
