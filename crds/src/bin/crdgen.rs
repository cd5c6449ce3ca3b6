//! Writes the CRDs to `deploy/crds/` (or the directory given as the first argument).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds"));
    std::fs::create_dir_all(&dir)?;
    for (file, crd) in crds::crds() {
        let path = dir.join(file);
        std::fs::write(&path, crds::crd_yaml(&crd))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
