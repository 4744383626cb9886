//! The migrations are embedded by `embed_migrations!`, which cargo does not know to re-run when
//! a migration is added or edited: this tells it to.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
