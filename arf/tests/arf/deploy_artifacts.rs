//! The deployment artifacts under `deploy/` (Dockerfiles, kustomize base and overlays) checked
//! offline by `scripts/check-deploy.sh`: rendered, validated against the Kubernetes schema
//! (kubernetes-validate), linted (hadolint), and held to the deployment's rules (probes, GPU
//! requests, non-root, grace periods, the flags the services really have). No cluster here.

#[test]
fn the_deployment_artifacts_render_validate_and_lint() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("bash")
        .arg("scripts/check-deploy.sh")
        .current_dir(&root)
        .output()
        .expect("running scripts/check-deploy.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scripts/check-deploy.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("deploy checks passed"), "{stdout}");
}
