//! Golden files for the pure pipeline's tests: what a builder or a status step produced for a
//! case, committed under `operator/tests/golden/`. A change that alters a child or a status
//! fails the test that covers it; `XIN_UPDATE_GOLDEN=1 cargo test -p xin-operator --lib`
//! rewrites the files, and the diff is reviewed like code.

use std::path::PathBuf;

use serde::Serialize;

/// Compares `value` (as YAML) with `operator/tests/golden/<name>.yaml`.
pub fn check(name: &str, value: &impl Serialize) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.yaml"));
    let got = serde_saphyr::to_string(value).expect("a test value serialises to YAML");
    if std::env::var("XIN_UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("has a parent"))
            .expect("create the golden directory");
        std::fs::write(&path, &got).expect("write the golden file");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} cannot be read ({e}); run XIN_UPDATE_GOLDEN=1 cargo test -p xin-operator --lib and review it",
            path.display()
        )
    });
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .enumerate()
            .filter(|(_, (w, g))| w != g)
            .take(10)
            .map(|(i, (w, g))| format!("line {}:\n  golden: {w}\n  built:  {g}", i + 1))
            .collect();
        panic!(
            "{name} differs from {} ({} lines golden, {} built):\n{}\nIf the change is intended, run XIN_UPDATE_GOLDEN=1 cargo test -p xin-operator --lib and review the diff.",
            path.display(),
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
}
