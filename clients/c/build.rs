//! Gives the shared library its SONAME, `libmmshare_c.so.MAJOR` (0 before 1.0: every 0.x
//! release may break the ABI, and the installed file names carry the whole version), so that
//! programs linked against it load the ABI they were built for.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmmshare_c.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
}
