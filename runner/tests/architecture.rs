//! The runner's shape: its modules (one per stage and support module) import each other without
//! a cycle, so that the flow reads top to bottom and no later stage reaches back up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a source file belongs to (`execute/run.rs` belongs to `execute`).
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().unwrap();
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_owned()
}

/// The modules named as `crate::<module>` in `source`, outside its `#[cfg(test)]` part.
fn references(source: &str) -> BTreeSet<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    code.match_indices("crate::")
        .map(|(index, _)| {
            code[index + "crate::".len()..]
                .chars()
                .take_while(|character| character.is_ascii_alphanumeric() || *character == '_')
                .collect::<String>()
        })
        .filter(|name| {
            name.chars()
                .next()
                .is_some_and(|first| first.is_ascii_lowercase())
        })
        .collect()
}

fn collect(directory: &Path, root: &Path, graph: &mut BTreeMap<String, BTreeSet<String>>) {
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, root, graph);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let module = module_of(path.strip_prefix(root).unwrap());
            if module == "lib" || module == "main" {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            let edges = graph.entry(module.clone()).or_default();
            edges.extend(references(&source).into_iter().filter(|name| *name != module));
        }
    }
}

/// A cycle through `start`, if any: depth-first over the import graph.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    let current = path.last().unwrap().clone();
    for next in graph.get(&current).into_iter().flatten() {
        if let Some(position) = path.iter().position(|module| module == next) {
            let mut cycle = path[position..].to_vec();
            cycle.push(next.clone());
            return Some(cycle);
        }
        if done.contains(next) {
            continue;
        }
        path.push(next.clone());
        if let Some(cycle) = cycle_from(graph, path, done) {
            return Some(cycle);
        }
        path.pop();
    }
    done.insert(current);
    None
}

#[test]
fn runner_modules_import_each_other_without_a_cycle() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    collect(&source, &source, &mut graph);
    assert!(
        graph.contains_key("plan") && graph.contains_key("execute"),
        "{graph:?}"
    );
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, &mut vec![module.clone()], &mut done) {
            panic!("import cycle among runner modules: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", ["b"].as_slice()),
        ("b", ["c"].as_slice()),
        ("c", ["a"].as_slice()),
    ]
    .into_iter()
    .map(|(module, edges)| {
        (
            module.to_owned(),
            edges.iter().map(|edge| (*edge).to_owned()).collect(),
        )
    })
    .collect();
    let cycle = cycle_from(&graph, &mut vec!["a".to_owned()], &mut BTreeSet::new());
    assert_eq!(cycle, Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    assert_eq!(
        references("use crate::plan::Plan;\n#[cfg(test)]\nuse crate::report;"),
        BTreeSet::from(["plan".to_owned()])
    );
}
