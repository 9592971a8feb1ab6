//! Every `global_asm!` block of the runtime names its section before its first label.
//!
//! LLVM emits a crate's module-level assembly one block after another, so a block that names no
//! section lands wherever the block before it left off: the nested-SVM entry code once landed
//! in the real-mode area (`.realmode`, linked at 0x1000) behind the real-mode harness and ran
//! from there as garbage (#UD at VMRUN's address).

use std::path::Path;

/// The `global_asm!(...)` blocks of `source`, each from its opening to its closing parenthesis.
fn blocks(source: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("global_asm!(") {
        let block = &rest[start..];
        let mut depth = 0usize;
        let mut end = block.len();
        for (index, character) in block.char_indices() {
            match character {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = index + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        found.push(&block[..end]);
        rest = &block[end..];
    }
    found
}

/// Where the block's first label (`name:` at the start of an assembly line, outside a
/// `.macro` definition, which emits nothing where it stands) is, if any.
fn first_label(block: &str) -> Option<usize> {
    let mut offset = 0;
    let mut in_macro = false;
    for line in block.split_inclusive('\n') {
        let text = line.trim_start().trim_start_matches('"').trim_start();
        if text.starts_with(".macro") {
            in_macro = true;
        } else if text.starts_with(".endm") {
            in_macro = false;
        }
        if in_macro {
            offset += line.len();
            continue;
        }
        let name: String = text
            .chars()
            .take_while(|character| character.is_ascii_alphanumeric() || "_.$".contains(*character))
            .collect();
        if !name.is_empty() && !name.starts_with('.') && text[name.len()..].starts_with(':') {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

/// Where the block first names a section (`.section`, `.pushsection` or `.text`), if it does.
fn first_section(block: &str) -> Option<usize> {
    [".section", ".pushsection", ".text\n", ".text\"", ".text,"]
        .iter()
        .filter_map(|directive| block.find(directive))
        .min()
}

/// The problems of `source`: one line per block whose first label comes before any section.
fn problems(name: &str, source: &str) -> Vec<String> {
    blocks(source)
        .into_iter()
        .filter_map(|block| {
            let label = first_label(block)?;
            match first_section(block) {
                Some(section) if section < label => None,
                _ => Some(format!(
                    "{name}: a global_asm! block has a label before naming its section: {}",
                    block.lines().take(3).collect::<Vec<_>>().join(" ")
                )),
            }
        })
        .collect()
}

fn sources(directory: &Path, found: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
}

#[test]
fn every_global_asm_block_names_its_section_first() {
    let mut found = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
    assert!(found.iter().any(|(_, source)| source.contains("global_asm!(")));
    let problems: Vec<String> = found
        .iter()
        .flat_map(|(name, source)| problems(name, source))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_block_without_a_section_is_found() {
    let unnamed = "global_asm!(\n    \".global entry\",\n    \"entry:\",\n    \"ret\",\n);\n";
    assert_eq!(problems("example", unnamed).len(), 1);
    let named = "global_asm!(\n    \".pushsection .text.entry, \\\"ax\\\"\",\n    \"entry:\",\n    \"ret\",\n    \".popsection\",\n);\n";
    assert!(problems("example", named).is_empty());
    let with_macro = "global_asm!(\n    r#\"\n    .macro M\n    1:\n    .endm\n    .section .text.m, \"ax\"\n    m:\n    \"#,\n);\n";
    assert!(problems("example", with_macro).is_empty());
    let raw = "global_asm!(\n    r#\"\n    .set X, 1\n    .section .text.entry, \"ax\"\n    entry:\n        ret\n    \"#,\n);\n";
    assert!(problems("example", raw).is_empty());
}
