//! The repository's shape, kept by tests (`cargo test -p xtask tidy`, part of
//! `cargo xtask test`):
//!
//! - every service has the same top-level modules: [`SERVICE_MODULES`] (docs/architecture.md
//!   says what goes in each);
//! - no `#[allow(...)]` in `src/` (use `#[expect(lint, reason = "...")]`, which fails once the
//!   lint no longer fires), except around generated code ([`ALLOW_EXCEPTIONS`]);
//! - no Rust source file over [`MAX_LINES`] lines outside generated code;
//! - no service crate depends on another service crate, dev-dependencies included;
//! - no service types a topic name (they come from `shop_proto::contracts`) or its own name
//!   more than once (its `SERVICE` constant).
//!
//! Each rule is a function over file paths and texts, so that the tests below can also
//! check that each rule catches a deliberate break.

use std::path::{Path, PathBuf};

/// The modules every service's `lib.rs` declares.
pub(crate) const SERVICE_MODULES: [&str; 8] = ["app", "config", "domain", "error", "events", "http", "store", "grpc"];

/// Files allowed a bare `#[allow]`, and why.
const ALLOW_EXCEPTIONS: [(&str, &str); 1] =
    [("crates/shop-proto/src/lib.rs", "generated code: which lints it trips depends on prost, not on us")];

/// The longest a hand-written source file may be.
pub(crate) const MAX_LINES: usize = 600;

/// Every `.rs` file of the workspace outside `target/` and hidden folders, relative to `root`.
fn rust_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "target" || name == "node_modules" {
                continue;
            }
            if path.is_dir() {
                walk(&path, found);
            } else if name.ends_with(".rs") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(root, &mut found);
    found.into_iter().filter_map(|path| path.strip_prefix(root).ok().map(Path::to_path_buf)).collect()
}

/// Whether a path (relative, `/`-separated) is under some crate's `src/`.
fn in_src(path: &str) -> bool {
    path.starts_with("src/") || path.contains("/src/")
}

/// Lines of `text` that allow a lint instead of expecting it.
fn bare_allows(path: &str, text: &str) -> Vec<String> {
    if !in_src(path) || ALLOW_EXCEPTIONS.iter().any(|(allowed, _)| *allowed == path) {
        return Vec::new();
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with("#[allow(") || line.trim_start().starts_with("#![allow("))
        .map(|(index, _)| format!("{path}:{}: #[allow] (use #[expect(lint, reason = \"...\")])", index + 1))
        .collect()
}

/// `Some(message)` when `text` is longer than [`MAX_LINES`].
fn too_long(path: &str, text: &str) -> Option<String> {
    let lines = text.lines().count();
    (lines > MAX_LINES).then(|| format!("{path}: {lines} lines (at most {MAX_LINES}; split it by concern)"))
}

/// The service crates a `Cargo.toml` depends on, in any dependency table.
fn service_dependencies(manifest: &str) -> Vec<String> {
    let mut section = String::new();
    let mut found = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        if !section.ends_with("dependencies") {
            continue;
        }
        let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
        if name.ends_with("-service") {
            found.push(name.to_owned());
        }
    }
    found
}

/// The modules of `SERVICE_MODULES` a service's `lib.rs` does not declare.
fn missing_modules(service: &str, lib: &str) -> Vec<String> {
    SERVICE_MODULES
        .iter()
        .filter(|module| !lib.lines().any(|line| line.trim() == format!("pub mod {module};")))
        .map(|module| format!("services/{service}: no `pub mod {module};` in lib.rs"))
        .collect()
}

/// Topic names typed as strings in a service's source (they come from the contracts).
fn typed_topics(path: &str, text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| {
            line.match_indices("\"shop.").any(|(at, _)| {
                let rest = &line[at + 1..];
                let name: String = rest.chars().take_while(|c| *c != '"').collect();
                let parts: Vec<&str> = name.split('.').collect();
                parts.len() >= 3 && parts[2].starts_with('v') && parts[2][1..].chars().all(|c| c.is_ascii_digit())
            })
        })
        .map(|(index, _)| format!("{path}:{}: a topic name typed by hand (use shop_proto::contracts)", index + 1))
        .collect()
}

fn read(root: &Path, path: &Path) -> String {
    std::fs::read_to_string(root.join(path)).unwrap_or_default()
}

/// The service folder names under `services/`.
fn services(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("services"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.path().is_dir())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every violation of every rule in the tree at `root`.
pub(crate) fn violations(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for path in rust_files(root) {
        let text = read(root, &path);
        let name = path.to_string_lossy().replace('\\', "/");
        found.extend(bare_allows(&name, &text));
        found.extend(too_long(&name, &text));
        if name.starts_with("services/") && in_src(&name) {
            found.extend(typed_topics(&name, &text));
        }
    }
    for service in services(root) {
        let manifest = read(root, &Path::new("services").join(&service).join("Cargo.toml"));
        for dependency in service_dependencies(&manifest) {
            if dependency != format!("{service}-service") {
                found.push(format!("services/{service}/Cargo.toml: depends on {dependency}"));
            }
        }
        found.extend(missing_modules(&service, &read(root, &Path::new("services").join(&service).join("src/lib.rs"))));
        let own_name = format!("\"{service}-service\"");
        let src = root.join("services").join(&service).join("src");
        let mentions: usize = rust_files(&src).iter().map(|path| read(&src, path).matches(&own_name).count()).sum();
        if mentions != 1 {
            found.push(format!(
                "services/{service}/src: {own_name} typed {mentions} times (once: the SERVICE constant)"
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_keeps_its_shape() {
        let found = violations(&crate::root());
        assert!(found.is_empty(), "the repository's shape is broken:\n{}", found.join("\n"));
    }

    #[test]
    fn each_rule_catches_a_deliberate_break() {
        assert_eq!(bare_allows("services/cart/src/app.rs", "#[allow(dead_code)]\nfn f() {}").len(), 1);
        assert!(bare_allows("services/cart/src/app.rs", "#[expect(dead_code, reason = \"x\")]").is_empty());
        assert!(
            bare_allows("services/cart/tests/api/main.rs", "#![allow(clippy::unwrap_used)]").is_empty(),
            "tests may"
        );
        assert!(bare_allows("crates/shop-proto/src/lib.rs", "#[allow(clippy::all)]").is_empty(), "the exception");
        assert!(too_long("a.rs", &"x\n".repeat(MAX_LINES + 1)).is_some());
        assert!(too_long("a.rs", &"x\n".repeat(MAX_LINES)).is_none());
        let manifest = "[dependencies]\nshop-kit.workspace = true\n\n[dev-dependencies]\nproduct-service = { path = \"../product\" }\n";
        assert_eq!(service_dependencies(manifest), ["product-service"]);
        assert!(
            service_dependencies("[package]\nname = \"cart-service\"\n").is_empty(),
            "its own name is no dependency"
        );
        let lib: String = SERVICE_MODULES.iter().map(|module| format!("pub mod {module};\n")).collect();
        assert!(missing_modules("cart", &lib).is_empty());
        assert_eq!(
            missing_modules("cart", &lib.replace("pub mod store;\n", "")),
            ["services/cart: no `pub mod store;` in lib.rs"]
        );
        assert_eq!(
            missing_modules("payment", &lib.replace("pub mod grpc;\n", "")),
            ["services/payment: no `pub mod grpc;` in lib.rs"],
            "every service has a gRPC API"
        );
        assert_eq!(typed_topics("x.rs", "let t = config.topic(\"shop.order.v1\");").len(), 1);
        assert!(typed_topics("x.rs", "// see \"shop.order.v1\"\nlet t = 1;").is_empty(), "comments may name topics");
        assert!(typed_topics("x.rs", "\"shop.order.v1.OrderPlaced\" ").len() == 1, "event types too");
        assert!(typed_topics("x.rs", "\"shop.local\"").is_empty());
    }
}
