//! Stamps the build with the git commit it came from, for `wsfleet_build_info{commit}`.
//! Outside a git checkout (a Docker build context without .git) the commit is `unknown`;
//! `WSFLEET_COMMIT` overrides both.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=WSFLEET_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("WSFLEET_COMMIT").ok().unwrap_or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_string())
    });
    println!("cargo:rustc-env=WSFLEET_COMMIT={commit}");
}
