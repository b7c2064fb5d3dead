//! Build facts for `crossprobe_build_info` and `--version`: the git commit the binary was built
//! from and the compiler's version. A build outside a git checkout (a source tarball, a `cargo
//! install` from the registry, a Docker context without `.git`) still works: the revision is then
//! "unknown". `CROSSPROBE_REVISION` in the environment overrides git, for builds that know their
//! commit but have no `.git` (a container build from a CI checkout).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CROSSPROBE_REVISION");
    let revision = std::env::var("CROSSPROBE_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=CROSSPROBE_REVISION={}", revision.trim());
    println!("cargo:rustc-env=CROSSPROBE_RUSTC={}", rustc_version().unwrap_or_else(|| "unknown".to_owned()));
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// The commit of HEAD, and the files whose change means a new commit (so a commit rebuilds the
/// version string, and nothing else does).
fn git_revision() -> Option<String> {
    let git = |args: &[&str]| output(Command::new("git").args(args));
    let revision = git(&["rev-parse", "HEAD"])?;
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    // Only files that exist: cargo takes a missing one as changed on every build, which would
    // recompile the crate each time (a repository without packed-refs has none).
    for path in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(p) = git(&["rev-parse", "--git-path", path]).filter(|p| std::path::Path::new(p).exists())
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    Some(revision)
}

/// "1.91.0" from "rustc 1.91.0 (f8297e351 2025-10-28)", as Go exporters label `goversion`.
fn rustc_version() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let text = output(Command::new(rustc).arg("--version"))?;
    text.split_whitespace().nth(1).map(str::to_owned)
}
