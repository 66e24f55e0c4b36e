//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!`
//! embeds them at compile time but cannot tell cargo to watch the directory.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
