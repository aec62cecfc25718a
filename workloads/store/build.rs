// `sqlx::migrate!` embeds ./migrations at compile time but cannot tell Cargo to watch the
// directory: without this, a new migration file is not picked up by an incremental build.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
