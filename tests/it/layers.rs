//! The architecture's rules, checked on the source:
//!
//! * no import cycle between the top-level modules of `src/`. A module's dependencies are
//!   every `crate::NAME` it names outside comments and its `#[cfg(test)]` part. A new cycle
//!   fails here with the edges that close it, naming the files;
//! * no file in `src/` over 500 lines, and no function over 60 lines outside tests (read with
//!   a Rust parser, from `fn` to its closing brace);
//! * the gateway builds every audit event from the typed `AuditEvent`: the untyped
//!   constructor is for tests that forge history.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::spanned::Spanned;
use syn::visit::Visit;

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

const MOST_LINES_PER_FILE: usize = 500;
const MOST_LINES_PER_FUNCTION: usize = 60;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn source_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let files: Vec<_> = files
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(src()).unwrap().display().to_string();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    assert!(files.len() > 50, "the sources were not read");
    files
}

/// Functions longer than the rule allows, outside `#[cfg(test)]` modules and `#[test]`s.
#[derive(Default)]
struct LongFunctions(Vec<(String, usize)>);

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        let path = attr.path();
        path.is_ident("test")
            || (path.is_ident("cfg")
                && attr
                    .parse_args::<syn::Ident>()
                    .is_ok_and(|arg| arg == "test"))
    })
}

impl LongFunctions {
    fn measure(&mut self, name: &syn::Ident, fn_token: &syn::token::Fn, body: &syn::Block) {
        let from = fn_token.span().start().line;
        let to = body.brace_token.span.close().end().line;
        let lines = to + 1 - from;
        if lines > MOST_LINES_PER_FUNCTION {
            self.0.push((name.to_string(), lines));
        }
    }
}

impl<'ast> Visit<'ast> for LongFunctions {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !is_test(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_test(&item.attrs) {
            self.measure(&item.sig.ident, &item.sig.fn_token, &item.block);
            syn::visit::visit_item_fn(self, item);
        }
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if !is_test(&item.attrs) {
            self.measure(&item.sig.ident, &item.sig.fn_token, &item.block);
            syn::visit::visit_impl_item_fn(self, item);
        }
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(body) = &item.default {
            self.measure(&item.sig.ident, &item.sig.fn_token, body);
        }
        syn::visit::visit_trait_item_fn(self, item);
    }
}

fn long_functions(code: &str) -> Vec<(String, usize)> {
    let file = syn::parse_file(code).expect("the source parses");
    let mut long = LongFunctions::default();
    long.visit_file(&file);
    long.0
}

#[test]
fn no_file_over_500_lines() {
    let long: Vec<String> = source_files()
        .into_iter()
        .filter_map(|(name, code)| {
            let lines = code.lines().count();
            (lines > MOST_LINES_PER_FILE).then(|| format!("{name}: {lines} lines"))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MOST_LINES_PER_FILE} lines (split them by job):\n{}",
        long.join("\n")
    );
}

#[test]
fn no_function_over_60_lines_outside_tests() {
    let long: Vec<String> = source_files()
        .into_iter()
        .flat_map(|(name, code)| {
            long_functions(&code)
                .into_iter()
                .map(move |(function, lines)| format!("{name}: {function} ({lines} lines)"))
        })
        .collect();
    assert!(
        long.is_empty(),
        "functions over {MOST_LINES_PER_FUNCTION} lines (make them a few named steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_check_measures_functions_from_fn_to_the_closing_brace() {
    let body = "    step();\n".repeat(58);
    let code = format!(
        "/// Docs do not count.\nfn fits() {{\n{body}}}\n\
         struct S;\nimpl S {{\n    fn too_long(&self) {{\n{body}    step();\n    }}\n}}\n\
         #[cfg(test)]\nmod tests {{\n    fn long_test_helper() {{\n{body}{body}    }}\n}}\n"
    );
    assert_eq!(long_functions(&code), vec![("too_long".to_owned(), 61)]);
}

#[test]
fn audit_events_are_built_typed() {
    let untyped: Vec<String> = source_files()
        .into_iter()
        .filter(|(name, code)| name != "audit/mod.rs" && code.contains("NewEvent::untyped"))
        .map(|(name, _)| name)
        .collect();
    assert!(
        untyped.is_empty(),
        "build audit events with NewEvent::new(.., AuditEvent::..), not untyped, in: {untyped:?}"
    );
}
