//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!`
//! embeds them at compile time but cannot tell cargo to watch the directory. And marks the tests
//! that need a real backend as ignored when its URL is not set (see `test_backends`).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    test_backends::declare();
}
