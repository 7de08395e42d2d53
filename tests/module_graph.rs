//! The files of `crate/` import each other without a cycle: each floor stands on the ones
//! below it (kernels, model, data, trainer, stages, session, surfaces). The graph is read
//! from the source: every `crate::…` and `super::…` path, in `use` lines and inline, is
//! resolved to the file that defines it (through a `mod.rs`'s `pub use` re-exports).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crate");

/// Every .rs file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's module path: crate/train/stage.rs → [train, stage]; crate/train/mod.rs → [train].
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(ROOT).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The file of a module path, if it is one.
fn file_of(module: &[String]) -> Option<PathBuf> {
    let base = module.iter().fold(PathBuf::from(ROOT), |p, m| p.join(m));
    if module.is_empty() {
        return Some(base.join("lib.rs"));
    }
    [base.with_extension("rs"), base.join("mod.rs")].into_iter().find(|p| p.is_file())
}

/// The code of a file without its comments (doc comments name paths they do not import)
/// and without its unit tests (a `#[cfg(test)]` module, at the end of the file: tests may
/// reach anywhere).
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::{b, c::{d, e}}` → [a::b, a::c::d, a::c::e].
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else { return vec![tree.to_string()] };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items.into_iter().filter(|i| !i.trim().is_empty()).flat_map(expand).map(|i| format!("{prefix}{i}")).collect()
}

/// Every `crate::…`/`super::…` path a file names: in `use` items (braces expanded) and
/// inline in its code.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let after = &rest[i + 4..];
        let end = after.find(';').unwrap_or(after.len());
        let tree: String = after[..end].split_whitespace().collect();
        if tree.starts_with("crate::") || tree.starts_with("super::") {
            out.extend(expand(&tree));
        }
        rest = &after[end..];
    }
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start).map(|i| i + from) {
            let boundary =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b'$');
            let end = code[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| i + e);
            if boundary {
                out.push(code[i..end].trim_end_matches(':').to_string());
            }
            from = end.max(i + 1);
        }
    }
    out
}

/// The file that defines what `path` names, seen from module `here`: the deepest module
/// it walks through, followed through a `pub use` re-export of its next name.
fn resolve(here: &[String], path: &str) -> Option<PathBuf> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty() && *s != "self").collect();
    let mut module: Vec<String> = match *segs.first()? {
        "crate" => Vec::new(),
        "super" => here.to_vec(),
        _ => return None,
    };
    segs.remove(0);
    if path.starts_with("super") {
        module.pop();
        while segs.first() == Some(&"super") {
            module.pop();
            segs.remove(0);
        }
    }
    let mut i = 0;
    while i < segs.len() {
        let mut next = module.clone();
        next.push(segs[i].to_string());
        if file_of(&next).is_none() {
            break;
        }
        module = next;
        i += 1;
    }
    let file = file_of(&module)?;
    // a name a mod.rs hands on from one of its children
    if let Some(name) = segs.get(i) {
        for line in code(&file).lines() {
            let line = line.trim();
            if let Some(tree) = line.strip_prefix("pub use ") {
                for item in expand(tree.trim_end_matches(';')) {
                    let parts: Vec<&str> = item.split("::").collect();
                    if parts.last() == Some(name) && !item.starts_with("crate::") && !item.starts_with("super::") {
                        let mut child = module.clone();
                        child.extend(parts[..parts.len() - 1].iter().map(|s| s.to_string()));
                        if let Some(f) = file_of(&child) {
                            return Some(f);
                        }
                    } else if parts.last() == Some(name) {
                        return resolve(&module, &item).or(Some(file.clone()));
                    }
                }
            }
        }
    }
    Some(file)
}

/// file → the files it imports.
fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    sources(Path::new(ROOT), &mut files);
    let mut graph = BTreeMap::new();
    for file in &files {
        let here = module_of(file);
        let imports: BTreeSet<PathBuf> = paths(&code(file))
            .iter()
            .filter_map(|p| resolve(&here, p))
            .filter(|target| target != file && !target.ends_with("lib.rs"))
            .collect();
        graph.insert(file.clone(), imports);
    }
    graph
}

/// A cycle of the graph, if it has one (depth-first search; grey = on the current path).
fn find_cycle(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    fn visit(
        node: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    return Some(stack[from..].iter().chain([next]).cloned().collect());
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node) {
            if let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn the_crate_has_no_import_cycle() {
    let graph = graph();
    let arrows: usize = graph.values().map(BTreeSet::len).sum();
    println!("{} files, {arrows} import arrows", graph.len());
    // the reader sees the imports it must: the trainer takes the stage trait, a stage
    // takes its data, the session takes the stages' registry
    let at = |f: &str| PathBuf::from(ROOT).join(f);
    for (from, to) in
        [("train/trainer.rs", "train/stage.rs"), ("train/sft.rs", "data/mod.rs"), ("session/mod.rs", "train/stages.rs")]
    {
        assert!(graph[&at(from)].contains(&at(to)), "{from} → {to} not seen: {:?}", graph[&at(from)]);
    }
    if let Some(cycle) = find_cycle(&graph) {
        let names: Vec<String> = cycle.iter().map(|p| p.strip_prefix(ROOT).unwrap().display().to_string()).collect();
        panic!("an import cycle: {}", names.join(" → "));
    }
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let (a, b) = (PathBuf::from("a.rs"), PathBuf::from("b.rs"));
    let mut graph = BTreeMap::from([(a.clone(), BTreeSet::from([b.clone()])), (b.clone(), BTreeSet::new())]);
    assert_eq!(find_cycle(&graph), None);
    graph.get_mut(&b).unwrap().insert(a.clone());
    assert_eq!(find_cycle(&graph), Some(vec![a.clone(), b, a]));
}
