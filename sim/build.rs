//! Declares the `tokio_unstable` cfg: the simulator reports whether the build seeds tokio's
//! `select!` RNG (see "Determinism" in the crate docs), and rustc must know the name.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tokio_unstable)");
}
