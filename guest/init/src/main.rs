//! zvisor's guest init (placeholder; see the foundation issue).

fn main() {
    println!("zvisor-init");
}
