//! Registers the web UI's files by directory: every file under `templates/` and `assets/` is
//! compiled into the binary, and each asset gets a content hash for its immutable URL. A new
//! file needs no Rust edit; cargo reruns this when either directory changes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path();
            let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            } else if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    // Sorted, so the generated code (and the binary) does not depend on directory order.
    found.sort();
    found
}

/// `app.js` + hash → `app.3f2a1c0d9e8b.js`; a name without an extension gets the hash appended.
fn hashed_name(name: &str, hash: &str) -> String {
    let (dir, file) = name.rsplit_once('/').map_or(("", name), |(d, f)| (d, f));
    let file = match file.split_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{file}.{hash}"),
    };
    if dir.is_empty() {
        file
    } else {
        format!("{dir}/{file}")
    }
}

fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let templates = root.join("templates");
    let assets = root.join("assets");
    println!("cargo:rerun-if-changed={}", templates.display());
    println!("cargo:rerun-if-changed={}", assets.display());

    let mut out = String::new();
    out.push_str("/// Every file under `templates/`: its path there, and its text.\n");
    out.push_str("pub static TEMPLATES: &[(&str, &str)] = &[\n");
    for path in files(&templates) {
        println!("cargo:rerun-if-changed={}", path.display());
        let _ =
            writeln!(out, "    ({:?}, include_str!({:?})),", relative(&templates, &path), path.display().to_string());
    }
    out.push_str("];\n\n");
    out.push_str("/// Every file under `assets/`: its path there, the same with its content hash, and its bytes.\n");
    out.push_str("pub static ASSETS: &[(&str, &str, &[u8])] = &[\n");
    for path in files(&assets) {
        println!("cargo:rerun-if-changed={}", path.display());
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let digest = Sha256::digest(&bytes);
        // 12 hex digits (48 bits): plenty to tell versions of one file apart.
        let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let name = relative(&assets, &path);
        let _ = writeln!(
            out,
            "    ({:?}, {:?}, include_bytes!({:?})),",
            name,
            hashed_name(&name, &hash),
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("web_files.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("cannot write {}: {e}", dest.display()));
}
