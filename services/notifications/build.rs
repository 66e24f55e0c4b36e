//! Rebuilds the crate when a migration is added or changed (`sqlx::migrate!` embeds them), and marks
//! the tests that need a real backend as ignored when it is missing (see `test_backends`).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    test_backends::declare();
}
