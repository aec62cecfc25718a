//! Writes the CRDs generated from the Rust types to `crds/` and the chart's `crds/`, and the
//! API reference to `docs/api.md`.
//! `cargo run -p xin-operator --bin crdgen` after changing a type; a test fails when stale.

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, yaml) in xin_operator::crdgen::render() {
        for dir in ["crds", "charts/xin/crds"] {
            let d = root.join(dir);
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join(&file), &yaml)?;
            println!("wrote {dir}/{file}");
        }
    }
    std::fs::write(
        root.join("docs/api.md"),
        xin_operator::crdgen::render_api_docs(),
    )?;
    println!("wrote docs/api.md");
    Ok(())
}
