//! `sqlx::migrate!` embeds the migration files when the crate compiles; cargo must know to
//! compile it again when one is added or changed.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
