//! The architecture's layering rule, checked on the source: no import cycle between the
//! top-level modules of `src/`. A module's dependencies are every `crate::NAME` it names
//! outside comments and its `#[cfg(test)]` part. A new cycle fails here with the edges that
//! close it, naming the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → (module it uses → files that use it).
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without what follows its first `#[cfg(test)]`.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn graph(src: &Path) -> Graph {
    let modules: BTreeSet<String> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let from = relative.iter().next().unwrap().to_str().unwrap();
        let from = from.strip_suffix(".rs").unwrap_or(from).to_owned();
        if !modules.contains(&from) {
            continue;
        }
        let code = code(&std::fs::read_to_string(&file).unwrap());
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != from && modules.contains(&name) {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(name)
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    graph
}

/// A path from `from` back to `to`, if there is one.
fn path_back(
    graph: &Graph,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if from == to {
        return Some(vec![to.to_owned()]);
    }
    if !seen.insert(from.to_owned()) {
        return None;
    }
    for next in graph.get(from).into_iter().flat_map(|deps| deps.keys()) {
        if let Some(mut path) = path_back(graph, next, to, seen) {
            path.insert(0, from.to_owned());
            return Some(path);
        }
    }
    None
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let graph = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 10, "the graph was not read: {graph:?}");
    let mut cycles = Vec::new();
    for (module, deps) in &graph {
        for dep in deps.keys() {
            if let Some(back) = path_back(&graph, dep, module, &mut BTreeSet::new()) {
                let files = &deps[dep];
                cycles.push(format!(
                    "{module} -> {} (uses in {})",
                    back.join(" -> "),
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_check_sees_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::b::B;\n// crate::c in a comment\n",
    )
    .unwrap();
    std::fs::create_dir(src.join("b")).unwrap();
    std::fs::write(src.join("b/mod.rs"), "pub struct B(crate::a::A);\n").unwrap();
    std::fs::write(src.join("c.rs"), "#[cfg(test)]\nuse crate::a::A;\n").unwrap();
    let graph = graph(src);
    assert!(path_back(&graph, "b", "a", &mut BTreeSet::new()).is_some());
    assert!(!graph["a"].contains_key("c"), "comments do not count");
    assert!(!graph.contains_key("c"), "tests do not count");
}
