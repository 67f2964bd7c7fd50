//! Tidy checks over the whole source tree (STYLE.md §11): no leftover debug-print macros, no
//! fix-me markers, and every to-do marker names an owner or issue (`(#5)` or `(name)` after it).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.')
            || name == "target"
            || name.starts_with("target-")
            || name == "data"
        {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_leftover_debugging_or_unowned_todos() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for top in ["crates", "tools", "bench"] {
        rust_files(&root.join(top), &mut files);
    }
    assert!(
        files.len() > 10,
        "tidy found only {} files under {}",
        files.len(),
        root.display()
    );
    let dbg = concat!("dbg", "!(");
    let fixme = concat!("FIX", "ME");
    let todo = concat!("TO", "DO");
    let mut problems = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            let place = format!("{}:{}", file.display(), number + 1);
            if line.contains(dbg) {
                problems.push(format!("{place}: leftover dbg!"));
            }
            if line.contains(fixme) {
                problems.push(format!("{place}: {fixme}"));
            }
            if let Some(at) = line.find(todo)
                && !line[at + todo.len()..].starts_with('(')
            {
                problems.push(format!("{place}: {todo} without owner or issue"));
            }
        }
    }
    assert!(problems.is_empty(), "tidy:\n{}", problems.join("\n"));
}
