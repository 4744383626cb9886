//! Architecture invariants, checked on the sources (as rust-analyzer's tidy tests do):
//!
//! * the use-case crate has no tokio, tonic, prost, http or hyper in its dependency tree;
//! * no service module touches the store, a transaction, the audit append or the change log,
//!   and none imports another;
//! * the server's modules import each other without a cycle;
//! * functions in `services/` are shorter than 40 lines;
//! * every module of every crate starts with a doc comment.
//!
//! Each checker is also run on a planted violation, so a check that silently passes everything
//! fails here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn server_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comment lines (doc links are not imports).
fn code(src: &str) -> String {
    src.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---- the use-case crate's dependency tree -------------------------------------------------

/// Every package `root` depends on, transitively, according to a `Cargo.lock`.
fn dependency_tree(lock: &str, root: &str) -> BTreeSet<String> {
    let doc: toml::Table = lock.parse().expect("Cargo.lock parses");
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    for p in doc["package"].as_array().expect("packages") {
        let name = p["name"].as_str().expect("name").to_owned();
        let ds: Vec<String> = p
            .get("dependencies")
            .and_then(|d| d.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str())
                    // "name version" when several versions are locked
                    .map(|d| d.split(' ').next().unwrap_or(d).to_owned())
                    .collect()
            })
            .unwrap_or_default();
        deps.entry(name).or_default().extend(ds);
    }
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_owned()];
    while let Some(n) = todo.pop() {
        for d in deps.get(&n).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

const TRANSPORT: [&str; 7] = ["tokio", "tonic", "prost", "http", "hyper", "axum", "tower"];

fn transport_in(tree: &BTreeSet<String>) -> Vec<String> {
    tree.iter()
        .filter(|d| TRANSPORT.contains(&d.as_str()))
        .cloned()
        .collect()
}

#[test]
fn the_use_case_crate_knows_no_transport() {
    let lock = read(&workspace().join("Cargo.lock"));
    let tree = dependency_tree(&lock, "fluxgate-core");
    assert!(tree.contains("fluxgate-store"), "the tree was not walked");
    assert_eq!(transport_in(&tree), Vec::<String>::new());
    // The check itself: the server's tree has them all.
    let server = dependency_tree(&lock, "fluxgate-server");
    assert!(transport_in(&server).len() >= 5);
}

// ---- service modules are adapters ---------------------------------------------------------

/// What only the use-case layer may do.
const LAYER_ONLY: [(&str, &str); 6] = [
    ("fluxgate_store", "uses the store"),
    ("Tx<", "holds a transaction"),
    ("audit::append", "appends to the audit trail"),
    (".changed(", "records a change-log entry"),
    (".write(", "opens a write transaction"),
    (".read(", "reads the database"),
];

/// Service modules not yet moved onto the use-case layer. Each must still break the rule (a
/// moved module must leave this list), so the list only shrinks.
const NOT_YET_ADAPTERS: [&str; 0] = [];

fn layer_violations(src: &str) -> Vec<&'static str> {
    let c = code(src);
    LAYER_ONLY
        .iter()
        .filter(|(needle, _)| c.contains(needle))
        .map(|(_, what)| *what)
        .collect()
}

fn service_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&server_src().join("services"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_owned();
            (stem, read(&p))
        })
        .collect()
}

#[test]
fn service_modules_are_adapters() {
    let mut wrong = Vec::new();
    for (name, src) in service_files() {
        let v = layer_violations(&src);
        let listed = NOT_YET_ADAPTERS.contains(&name.as_str());
        match (listed, v.is_empty()) {
            (false, false) => wrong.push(format!("services/{name}.rs {}", v.join(", "))),
            (true, true) => wrong.push(format!(
                "services/{name}.rs is an adapter now: take it off NOT_YET_ADAPTERS"
            )),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(
        layer_violations("fn f(tx: &mut Tx<'_>) { audit::append(tx.conn, e, 0)?; }"),
        ["holds a transaction", "appends to the audit trail"]
    );
    assert!(layer_violations("// fluxgate_store is named in a comment only").is_empty());
}

// ---- the module graph ---------------------------------------------------------------------

/// The server's modules (`services::x` for the services) and the modules each imports.
fn module_graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let names: BTreeSet<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let mut g = BTreeMap::new();
    for (name, src) in files {
        let c = code(src);
        let mut deps = BTreeSet::new();
        let mut refer = |m: &str| {
            if names.contains(m) && m != name {
                deps.insert(m.to_owned());
            }
        };
        for (i, _) in c.match_indices("crate::") {
            let rest = &c[i + "crate::".len()..];
            let head: String = rest
                .chars()
                .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
                .collect();
            if head == "services" {
                let sub: String = rest["services::".len().min(rest.len())..]
                    .chars()
                    .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
                    .collect();
                refer(&format!("services::{sub}"));
                refer("services");
            } else if rest.starts_with('{') {
                let group: String = rest.chars().take_while(|ch| *ch != '}').collect();
                for part in group.trim_start_matches('{').split(',') {
                    let head: String = part
                        .trim()
                        .chars()
                        .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
                        .collect();
                    refer(&head);
                }
            } else {
                refer(&head);
            }
        }
        if let Some(svc) = name.strip_prefix("services::") {
            for (i, _) in c.match_indices("super::") {
                let sub: String = c[i + "super::".len()..]
                    .chars()
                    .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
                    .collect();
                if sub != svc {
                    refer(&format!("services::{sub}"));
                }
                refer("services");
            }
        }
        g.insert(name.clone(), deps);
    }
    g
}

/// A cycle in `g`, if there is one, as the path that closes it.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut HashMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| p == n).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_owned());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n.to_owned(), 1);
        path.push(n.to_owned());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = HashMap::new();
    for n in g.keys() {
        if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn server_modules() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&server_src(), &mut files);
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p
                .strip_prefix(server_src())
                .ok()?
                .to_str()?
                .trim_end_matches(".rs");
            let name = match rel {
                "lib" | "main" => return None,
                "services/mod" => "services".to_owned(),
                r => r.replace('/', "::"),
            };
            Some((name, read(&p)))
        })
        .collect()
}

#[test]
fn the_server_module_graph_has_no_cycle() {
    let g = module_graph(&server_modules());
    assert!(
        g["services::approvals"].contains("runner"),
        "imports not found"
    );
    assert_eq!(find_cycle(&g), None);
    let planted = module_graph(&[
        ("db".into(), "use crate::idempotency::claim;".into()),
        ("idempotency".into(), "use crate::{db::Db, error};".into()),
        ("error".into(), String::new()),
    ]);
    assert_eq!(
        find_cycle(&planted),
        Some(vec!["db".into(), "idempotency".into(), "db".into()])
    );
}

#[test]
fn no_service_module_imports_another() {
    let g = module_graph(&server_modules());
    let wrong: Vec<String> = g
        .iter()
        .filter(|(n, _)| n.starts_with("services::"))
        .flat_map(|(n, ds)| {
            ds.iter()
                .filter(|d| d.starts_with("services::"))
                .map(move |d| format!("{n} imports {d}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
    let planted = module_graph(&[
        ("services::users".into(), "use super::approvals::x;".into()),
        ("services::approvals".into(), String::new()),
        ("services".into(), String::new()),
    ]);
    assert!(planted["services::users"].contains("services::approvals"));
}

// ---- short service functions --------------------------------------------------------------

/// The functions of `src` longer than `max` lines, as `name (lines)`. A function runs from its
/// `fn` line to the closing brace at the same indentation (rustfmt's layout).
fn long_functions(src: &str, max: usize) -> Vec<String> {
    let lines: Vec<&str> = src.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = l.len() - t.len();
        let is_fn = [
            "fn ",
            "pub fn ",
            "async fn ",
            "pub async fn ",
            "pub(crate) fn ",
        ]
        .iter()
        .any(|p| t.starts_with(p));
        if !is_fn || t.ends_with(';') {
            continue;
        }
        let close = " ".repeat(indent) + "}";
        let end = lines[i..]
            .iter()
            .position(|x| *x == close)
            .map_or(lines.len(), |e| i + e);
        let n = end - i + 1;
        if n > max {
            let name: String = t
                .split("fn ")
                .nth(1)
                .unwrap_or("")
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(format!("{name} ({n})"));
        }
    }
    out
}

#[test]
fn service_functions_are_short() {
    let mut wrong = Vec::new();
    for (name, src) in service_files() {
        if NOT_YET_ADAPTERS.contains(&name.as_str()) {
            continue;
        }
        for f in long_functions(&src, 39) {
            wrong.push(format!("services/{name}.rs: {f}"));
        }
    }
    assert!(wrong.is_empty(), "40 lines or longer: {wrong:#?}");
    let planted = format!("fn long() {{\n{}}}\n", "    x();\n".repeat(40));
    assert_eq!(long_functions(&planted, 39), ["long (42)"]);
}

// ---- doc comments -------------------------------------------------------------------------

#[test]
fn every_module_starts_with_a_doc_comment() {
    let mut files = Vec::new();
    for dir in ["crates", "tests"] {
        rust_files(&workspace().join(dir), &mut files);
    }
    let wrong: Vec<String> = files
        .iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "target"))
        .filter(|p| !read(p).starts_with("//!"))
        .map(|p| {
            p.strip_prefix(workspace())
                .unwrap_or(p)
                .display()
                .to_string()
        })
        .collect();
    assert!(files.len() > 100, "the sources were not found");
    assert!(wrong.is_empty(), "no `//!` doc comment first: {wrong:#?}");
}
