//! The patched crates under `patches/` are the pinned crates.io releases plus the diffs beside
//! them (`patches/*.patch`), and nothing else: `scripts/check-patches.sh` unpacks each release
//! (checksummed), applies its diff and compares. A change made in the tree and not in the
//! diff, or the other way round, fails here.

#[test]
fn the_vendored_crates_are_their_releases_plus_the_committed_diffs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("bash")
        .arg("scripts/check-patches.sh")
        .current_dir(&root)
        .output()
        .expect("running scripts/check-patches.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scripts/check-patches.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for krate in ["candle-core", "mistralrs-core"] {
        assert!(stdout.contains(&format!("patches/{krate}: ")), "{stdout}");
    }
}
