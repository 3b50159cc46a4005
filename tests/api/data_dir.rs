//! The data dir on disk, through the real binary: a new one and everything in it are
//! private (0700 / 0600); one open to others is refused before anything is created in it;
//! `keyledger check` passes on a stopped server's dir, refuses a running one saying so, and
//! says "permission denied" — not "still running" — when it cannot write the store.
//!
//! Process helpers (`run`, `assert_private`, …) are shared with `binary_ops.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use serde_json::json;

use crate::bin_server::{BinServer, bin_client, serve_command};
use crate::binary_ops::{assert_private, entries, keyledger, mode, run, text, walk};

// ---------------------------------------------------------------------------------------
// 12. Data dir permissions
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_data_dir_and_everything_in_it_are_private() {
    // Arrange: a data dir the server creates.
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let mut server = BinServer::start(&data_dir, &[]).expect("server starts");
    assert_eq!(mode(&data_dir), 0o700);
    let admin = server.secret.clone().expect("bootstrap secret");
    let client = bin_client();

    // Act: some writes, then a clean shutdown.
    for i in 0..5 {
        let response = client
            .post(server.url("/v1/admin/api-keys"))
            .bearer_auth(&admin)
            .json(&json!({"name": format!("private-{i}"), "role": "basic"}))
            .send()
            .await
            .expect("create key");
        assert_eq!(response.status(), 201);
    }
    let response = client
        .post(server.url("/v1/admin/users"))
        .bearer_auth(&admin)
        .json(&json!({"email": "private@example.com", "role": "basic"}))
        .send()
        .await
        .expect("register user");
    assert_eq!(response.status(), 201);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");

    // Assert: every directory 0700, every file 0600.
    assert_private(&data_dir);
}

#[test]
fn a_data_dir_open_to_others_is_refused_and_left_untouched() {
    // Arrange
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    std::fs::create_dir(&data_dir).expect("create dir");
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // Act
    let output = run(serve_command(&data_dir));

    // Assert
    let stderr = text(&output.stderr);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout {stdout}; stderr {stderr}"
    );
    assert!(stderr.contains("chmod 700"), "{stderr}");
    assert!(stderr.contains(&data_dir.display().to_string()), "{stderr}");
    assert!(
        !stdout.contains("secret:") && !stdout.contains("listening"),
        "{stdout}"
    );
    assert_eq!(entries(&data_dir), 0, "nothing created");
    assert_eq!(mode(&data_dir), 0o755, "the mode is left alone");
}

// ---------------------------------------------------------------------------------------
// 14. keyledger check
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn check_passes_on_a_stopped_dir_and_refuses_a_running_one() {
    // Arrange: a served log with one more key.
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let mut server = BinServer::start(&data_dir, &[]).expect("server starts");
    let admin = server.secret.clone().expect("bootstrap secret");
    let response = bin_client()
        .post(server.url("/v1/admin/api-keys"))
        .bearer_auth(&admin)
        .json(&json!({"name": "checked", "role": "basic"}))
        .send()
        .await
        .expect("create key");
    assert_eq!(response.status(), 201);

    // Act and assert: while it runs.
    let output = run(check(&data_dir));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr {stderr}");
    assert!(
        stderr.contains("server") && stderr.contains("running"),
        "says a server is running: {stderr}"
    );

    // Once it is stopped.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    drop(server);
    let output = run(check(&data_dir));
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "stdout {stdout}; stderr {}",
        text(&output.stderr)
    );
    assert!(stdout.starts_with("ok: "), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_leaves_every_file_in_the_data_dir_private() {
    // Arrange: a stopped server's dir.
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let mut server = BinServer::start(&data_dir, &[]).expect("server starts");
    let admin = server.secret.clone().expect("bootstrap secret");
    let response = bin_client()
        .post(server.url("/v1/admin/api-keys"))
        .bearer_auth(&admin)
        .json(&json!({"name": "checked", "role": "basic"}))
        .send()
        .await
        .expect("create key");
    assert_eq!(response.status(), 201);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    drop(server);
    assert_private(&data_dir);

    // Act: check it under the usual umask.
    let mut command = Process::new("sh");
    command
        .arg("-c")
        .arg("umask 022 && exec \"$0\" check --data-dir \"$1\"")
        .arg(env!("CARGO_BIN_EXE_keyledger"))
        .arg(&data_dir)
        .env_remove("KEYLEDGER_DATA_DIR");
    let output = run(command);
    assert!(output.status.success(), "{}", text(&output.stderr));

    // Assert
    assert_private(&data_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_says_permission_denied_on_a_dir_it_cannot_write() {
    // Arrange: a stopped server's dir that the checking user may read but not write. Root
    // ignores file modes, so as root the dir is given to `nobody` and checked as `nobody`.
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let mut server = BinServer::start(&data_dir, &[]).expect("server starts");
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    drop(server);
    let as_root = rustix::process::geteuid().is_root();
    let mut command = if as_root {
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("let nobody into the temp dir");
        chown_tree(&data_dir, NOBODY);
        let binary = binary_for_nobody(tmp.path());
        let mut command = Process::new("setpriv");
        command
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg(binary);
        command
    } else {
        Process::new(env!("CARGO_BIN_EXE_keyledger"))
    };
    set_writable(&data_dir, false);
    command
        .arg("check")
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("KEYLEDGER_DATA_DIR");

    // Act
    let output = run(command);

    // Assert
    set_writable(&data_dir, true);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr {stderr}");
    assert!(
        stderr.to_lowercase().contains("permission denied"),
        "{stderr}"
    );
    assert!(!stderr.contains("still running"), "{stderr}");
    assert!(!stderr.contains("in use"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// uid and gid of `nobody`.
const NOBODY: u32 = 65534;

fn check(data_dir: &Path) -> Process {
    let mut command = keyledger();
    command.arg("check").arg("--data-dir").arg(data_dir);
    command
}

/// `chown -R uid:uid`.
fn chown_tree(root: &Path, uid: u32) {
    std::os::unix::fs::chown(root, Some(uid), Some(uid)).expect("chown");
    let mut found = Vec::new();
    walk(root, &mut found);
    for (path, _, _) in found {
        std::os::unix::fs::lchown(&path, Some(uid), Some(uid)).expect("chown");
    }
}

/// `chmod -R a-w` (or `u+w`), keeping directories searchable.
fn set_writable(root: &Path, writable: bool) {
    let mut found = vec![(root.to_path_buf(), true, mode(root))];
    walk(root, &mut found);
    // chmod needs ownership, not write permission on the parent: any order works.
    for (path, _, mode) in found {
        let mode = if writable {
            mode | 0o200
        } else {
            mode & !0o222
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

/// A path to the keyledger binary that `nobody` can run: the built one when every
/// directory above it lets others through, else a copy in `tmp` (which must be 0755).
fn binary_for_nobody(tmp: &Path) -> PathBuf {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_keyledger"));
    let runs = Process::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(&built)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return built;
    }
    let dir = tmp.join("bin");
    std::fs::create_dir(&dir).expect("create bin dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = dir.join("keyledger");
    std::fs::copy(&built, &copy).expect("copy the binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}
