//! The cluster's operations scripts (`assets/ops/`, written into the image by the `backup`,
//! `cleanup` and `builds` edits), run for real against stand-ins: a `docker` shell script that
//! records its calls and keeps volumes as directories, a `mysqldump`, a `sendmail`, an `ssh`
//! that runs the remote command locally (so real rsync works over it), and a `tar` wrapper that
//! records which containers were paused during each copy (and can fail mid-copy). Archives are
//! checked with the real `zstd` and `tar`; every script passes `shellcheck`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DAY: &str = "2026-11-27";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script(name: &str) -> PathBuf {
    repo().join("assets/ops").join(name)
}

/// The path of a host tool; a missing oracle fails the test.
fn tool(name: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .unwrap();
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !p.is_empty(),
        "oracle/tool {name} is missing; install it (scripts/test lists the Debian packages)"
    );
    p
}

const DOCKER_STUB: &str = r#"#!/bin/bash
# Stand-in docker: state in $STUB_STATE (volumes/NAME dirs, containers lines
# "ID NAME IMAGE vol1,vol2", labels/NAME, paused, builder_NAME); every call is logged.
S=$STUB_STATE
printf 'docker %s\n' "$*" >>"$S/calls"
kind=$1
sub=${2:-}
last=${!#}
case "$kind $sub" in
"volume ls") ls -1 "$S/volumes" ;;
"volume inspect")
    [ -d "$S/volumes/$last" ] || { echo "Error: No such volume: $last" >&2; exit 1; }
    echo "$S/volumes/$last" ;;
"volume create") mkdir -p "$S/volumes/$last"; echo "$last" ;;
"volume prune" | "container prune" | "image prune")
    shift 2
    filter=""
    all=0
    while [ $# -gt 0 ]; do
        case $1 in
        --filter) filter=$2; shift ;;
        --all | -a) all=1 ;;
        esac
        shift
    done
    if [ "$kind" = volume ]; then
        echo "Deleted Volumes:"
        for v in $(ls -1 "$S/volumes"); do
            grep -q "[ ,]$v\(,\|$\)" "$S/containers" 2>/dev/null && continue
            case $filter in
            label!=*)
                key=${filter#label!=}
                if [ -f "$S/labels/$v" ] && grep -qx -e "$key" -e "$key=.*" "$S/labels/$v"; then continue; fi ;;
            esac
            [ "$all" = 1 ] || [ ${#v} = 64 ] || continue
            rm -rf "${S:?}/volumes/$v"
            echo "$v"
        done
        echo
        echo "Total reclaimed space: 2kB"
    elif [ "$kind" = image ]; then
        echo "Total reclaimed space: 1.5MB"
    else
        echo "Total reclaimed space: 0B"
    fi ;;
"ps "*)
    shift
    q=0 fv="" fmt=0
    while [ $# -gt 0 ]; do
        case $1 in
        --quiet | -q) q=1 ;;
        --filter) case $2 in volume=*) fv=${2#volume=} ;; esac; shift ;;
        --format) fmt=1; shift ;;
        esac
        shift
    done
    [ -f "$S/containers" ] || exit 0
    while read -r id name image vols; do
        if [ -n "$fv" ]; then
            case ",$vols," in *",$fv,"*) ;; *) continue ;; esac
        fi
        if [ "$q" = 1 ]; then echo "$id"; else echo "$id $name $image"; fi
    done <"$S/containers" ;;
"pause "*)
    shift
    for id; do
        [ ! -e "$S/fail_pause" ] || exit 1
        echo "$id" >>"$S/paused"
    done ;;
"unpause "*)
    shift
    for id; do sed -i "/^$id\$/d" "$S/paused"; done ;;
"exec "*)
    id=$2
    shift 2
    ( set -a; [ ! -f "$S/env_$id" ] || . "$S/env_$id"; exec "$@" ) ;;
"buildx inspect")
    [ -e "$S/builder_$last" ] || { echo "ERROR: no builder \"$last\" found" >&2; exit 1; } ;;
"buildx create")
    shift 2
    while [ $# -gt 0 ]; do
        case $1 in --name) touch "$S/builder_$2"; shift ;; esac
        shift
    done ;;
"buildx bake")
    printf 'TAG=%s SRC=%s REGISTRY=%s\n' "$TAG" "$SRC" "${REGISTRY-unset}" >>"$S/bake_env" ;;
*)
    echo "stand-in docker: unexpected call: $*" >&2
    exit 99 ;;
esac
"#;

const TAR_WRAPPER: &str = r#"#!/bin/bash
# Records the directory each tar works on and which containers are paused meanwhile; with
# STUB_FAIL_TAR=NAME, a copy of a directory named NAME fails half-way.
S=$STUB_STATE
dir="" prev=""
for a; do [ "$prev" = -C ] && dir=$a; prev=$a; done
printf 'tar -C %s paused=%s\n' "$dir" "$(tr '\n' ' ' <"$S/paused" 2>/dev/null)" >>"$S/calls"
if [ -n "${STUB_FAIL_TAR:-}" ] && [ "${dir##*/}" = "$STUB_FAIL_TAR" ]; then
    @TAR@ "$@" | head -c 700
    exit 2
fi
exec @TAR@ "$@"
"#;

const MYSQLDUMP_STUB: &str = r#"#!/bin/sh
printf 'mysqldump %s MYSQL_PWD=%s\n' "$*" "${MYSQL_PWD-unset}" >>"$STUB_STATE/calls"
printf -- '-- stand-in dump\nCREATE DATABASE shop;\n'
"#;

const SENDMAIL_STUB: &str = r#"#!/bin/sh
printf 'sendmail %s\n' "$*" >>"$STUB_STATE/calls"
cat >>"$STUB_STATE/mail"
"#;

const SYSTEMCTL_STUB: &str = r#"#!/bin/sh
# Records its calls; `start` fails while $STUB_STATE/nas_down exists (the NAS is unreachable).
printf 'systemctl %s\n' "$*" >>"$STUB_STATE/calls"
[ "$1" != start ] || [ ! -e "$STUB_STATE/nas_down" ]
"#;

const SSH_STUB: &str = r#"#!/bin/bash
# ssh [-i KEY] [-p PORT] [-o OPT]... HOST COMMAND...: run COMMAND here.
printf 'ssh %s\n' "$*" >>"$STUB_STATE/ssh_calls"
while [ $# -gt 0 ]; do
    case $1 in
    -i | -p | -o | -l) shift 2 ;;
    -*) shift ;;
    *) break ;;
    esac
done
shift
exec sh -c "$*"
"#;

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    bin: PathBuf,
    target: PathBuf,
}

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn setup() -> Env {
    let tar = tool("tar");
    tool("zstd");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let state = root.join("state");
    let bin = root.join("bin");
    let target = root.join("target");
    for d in [
        &state,
        &bin,
        &target,
        &state.join("volumes"),
        &state.join("labels"),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(state.join("paused"), "").unwrap();
    write_exe(&bin.join("docker"), DOCKER_STUB);
    write_exe(&bin.join("tar"), &TAR_WRAPPER.replace("@TAR@", &tar));
    write_exe(&bin.join("mysqldump"), MYSQLDUMP_STUB);
    write_exe(&bin.join("sendmail"), SENDMAIL_STUB);
    write_exe(&bin.join("ssh"), SSH_STUB);
    write_exe(&bin.join("systemctl"), SYSTEMCTL_STUB);
    Env {
        _dir: dir,
        root,
        state,
        bin,
        target,
    }
}

impl Env {
    fn volume(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let v = self.state.join("volumes").join(name);
        std::fs::create_dir_all(&v).unwrap();
        for (p, data) in files {
            let f = v.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, data).unwrap();
        }
        v
    }

    fn container(&self, line: &str) {
        let p = self.state.join("containers");
        let mut s = std::fs::read_to_string(&p).unwrap_or_default();
        s.push_str(line);
        s.push('\n');
        std::fs::write(p, s).unwrap();
    }

    fn run(&self, name: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new(script(name));
        c.args(args)
            .env("PATH", path)
            .env("STUB_STATE", &self.state)
            .env("TMPDIR", &self.root)
            .env("HC1_BACKUP_CONF", "/nonexistent")
            .env("HC1_CLEANUP_CONF", "/nonexistent")
            .env("HC1_BUILDS_CONF", "/nonexistent")
            .env("HC1_BACKUP_MODE", "mount")
            .env("HC1_BACKUP_DIR", &self.target)
            .env("HC1_BACKUP_REQUIRE_MOUNT", "0")
            .env("HC1_BACKUP_HOST", "node1")
            .env("HC1_BACKUP_DATE", DAY)
            .env_remove("TAG")
            .env_remove("REGISTRY");
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.state.join("calls")).unwrap_or_default()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.join(name)).unwrap_or_default()
    }
}

fn show(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Decompress with the real zstd and unpack with the real tar: relative path -> contents
/// (directories as "<dir>").
fn unpack(archive: &Path) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("zstd -q -d -c -- \"$1\" | tar -x -f - -C \"$2\"")
        .arg("sh")
        .arg(archive)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        archive.display(),
        show(&out)
    );
    tree_of(dir.path())
}

fn tree_of(root: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    fn walk(root: &Path, d: &Path, m: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                m.insert(rel, "<dir>".into());
                walk(root, &p, m);
            } else {
                m.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    walk(root, root, &mut m);
    m
}

fn zstd_text(p: &Path) -> String {
    let out = Command::new("zstd")
        .args(["-q", "-d", "-c"])
        .arg(p)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn listing(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A small backup archive of `files` at `dir`, made with the real tar and zstd.
fn make_backup(dir: &Path, vol: &str, files: &[(&str, &str)]) -> PathBuf {
    let src = tempfile::tempdir().unwrap();
    for (p, data) in files {
        let f = src.path().join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    let out_file = dir.join(format!("{vol}.tar.zst"));
    let out = Command::new("sh")
        .arg("-c")
        .arg("tar -C \"$1\" -cf - . | zstd -q -c > \"$2\"")
        .arg("sh")
        .arg(src.path())
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    out_file
}

fn web_and_db(env: &Env) {
    env.volume("app-data", &[("index.html", "hello"), ("sub/b.txt", "bee")]);
    env.volume("db-data", &[("ibdata1", "innodb pages")]);
    env.container("c1 web nginx:1.27 app-data");
    env.container("c2 shop_db.1.x7 registry.lan:5000/mariadb:11 db-data");
    env.container("c3 tool alpine:3 -");
    std::fs::write(env.state.join("env_c2"), "MARIADB_ROOT_PASSWORD=r00t-pw\n").unwrap();
}

#[test]
fn backup_writes_each_volume_and_a_mysql_dump_with_containers_paused() {
    let env = setup();
    web_and_db(&env);
    let o = env.run("hc1-volume-backup", &[], &[]);
    assert!(o.status.success(), "{}", show(&o));
    let day = env.target.join("node1").join(DAY);
    assert_eq!(
        listing(&day),
        [
            "app-data.tar.zst",
            "db-data.tar.zst",
            "mysql-shop_db.1.x7.sql.zst"
        ]
    );
    let app = unpack(&day.join("app-data.tar.zst"));
    assert_eq!(app.get("index.html").map(String::as_str), Some("hello"));
    assert_eq!(app.get("sub/b.txt").map(String::as_str), Some("bee"));
    assert_eq!(app.len(), 3, "{app:?}");
    let db = unpack(&day.join("db-data.tar.zst"));
    assert_eq!(db.get("ibdata1").map(String::as_str), Some("innodb pages"));
    assert_eq!(
        zstd_text(&day.join("mysql-shop_db.1.x7.sql.zst")),
        "-- stand-in dump\nCREATE DATABASE shop;\n"
    );

    let calls = env.calls();
    // The dump: inside the MariaDB container only, one transaction, every database, the
    // container's own root password passed in the environment (not on the command line).
    assert!(calls.contains("docker exec c2 sh -c"), "{calls}");
    assert!(!calls.contains("docker exec c1"), "{calls}");
    let dump = calls
        .lines()
        .find(|l| l.starts_with("mysqldump "))
        .unwrap_or_else(|| panic!("{calls}"));
    for want in [
        "-uroot",
        "--single-transaction",
        "--all-databases",
        "MYSQL_PWD=r00t-pw",
    ] {
        assert!(dump.contains(want), "{dump}");
    }
    assert!(
        !dump
            .split(" MYSQL_PWD=")
            .next()
            .unwrap()
            .contains("r00t-pw")
    );
    // Each volume's running containers are paused exactly while it is copied.
    let at = |needle: &str| {
        calls
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in\n{calls}"))
    };
    let app_dir = env.state.join("volumes/app-data");
    let tar_app = at(&format!("tar -C {} paused=c1 \n", app_dir.display()));
    assert!(at("docker pause c1\n") < tar_app && tar_app < at("docker unpause c1\n"));
    let db_dir = env.state.join("volumes/db-data");
    let tar_db = at(&format!("tar -C {} paused=c2 \n", db_dir.display()));
    assert!(at("docker pause c2\n") < tar_db && tar_db < at("docker unpause c2\n"));
    assert!(
        at("mysqldump ") < at("docker pause c2\n"),
        "dump before pausing"
    );
    assert!(!calls.contains("pause c3"), "{calls}");
    assert_eq!(env.read("paused"), "", "everything unpaused");
    assert!(!env.state.join("mail").exists(), "no mail on success");
}

#[test]
fn retention_deletes_only_this_hosts_dated_dirs_older_than_keep_days() {
    let env = setup();
    env.volume("app-data", &[("a", "1")]);
    let host = env.target.join("node1");
    for d in [
        "2026-11-01",
        "2026-11-12",
        "2026-11-13",
        "2026-11-20",
        "notes",
        "2026-1-1",
    ] {
        std::fs::create_dir_all(host.join(d)).unwrap();
        std::fs::write(host.join(d).join("x.tar.zst"), "old").unwrap();
    }
    std::fs::create_dir_all(env.target.join("node2/2026-10-01")).unwrap();
    let o = env.run("hc1-volume-backup", &[], &[("HC1_BACKUP_KEEP_DAYS", "14")]);
    assert!(o.status.success(), "{}", show(&o));
    // 2026-11-27 minus 14 days is 2026-11-13: older directories go, that one stays.
    assert_eq!(
        listing(&host),
        ["2026-1-1", "2026-11-13", "2026-11-20", DAY, "notes"]
    );
    assert_eq!(listing(&env.target.join("node2")), ["2026-10-01"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("retention: deleting node1/2026-11-01"),
        "{out}"
    );
}

#[test]
fn a_failure_mid_copy_keeps_the_previous_backups_and_mails_root() {
    let env = setup();
    web_and_db(&env);
    let host = env.target.join("node1");
    // Yesterday's backup, an old one retention would delete, and today's earlier run.
    let yesterday = make_backup(
        &host.join("2026-11-26"),
        "app-data",
        &[("index.html", "v1")],
    );
    let old = host.join("2026-10-01");
    std::fs::create_dir_all(&old).unwrap();
    let earlier = make_backup(&host.join(DAY), "app-data", &[("index.html", "v2")]);
    let yesterday_bytes = std::fs::read(&yesterday).unwrap();
    let earlier_bytes = std::fs::read(&earlier).unwrap();

    let o = env.run("hc1-volume-backup", &[], &[("STUB_FAIL_TAR", "app-data")]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(std::fs::read(&yesterday).unwrap(), yesterday_bytes);
    assert_eq!(
        std::fs::read(&earlier).unwrap(),
        earlier_bytes,
        "replaced by a partial copy"
    );
    // Nothing half-written anywhere, the other volume and the dump are complete.
    let today = listing(&host.join(DAY));
    assert_eq!(
        today,
        [
            "app-data.tar.zst",
            "db-data.tar.zst",
            "mysql-shop_db.1.x7.sql.zst"
        ]
    );
    assert!(unpack(&host.join(DAY).join("db-data.tar.zst")).contains_key("ibdata1"));
    assert!(old.is_dir(), "retention must not run after a failure");
    assert_eq!(env.read("paused"), "", "containers left paused");
    let mail = env.read("mail");
    assert!(
        mail.starts_with("To: root\nSubject: [node1] volume backup FAILED\n"),
        "{mail}"
    );
    assert!(mail.contains("volume app-data: copy failed"), "{mail}");
    assert!(env.calls().contains("sendmail -t\n"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ERROR: volume app-data"), "{err}");
}

#[test]
fn an_unmounted_share_is_refused_and_reported() {
    let env = setup();
    env.volume("app-data", &[("a", "1")]);
    let o = env.run(
        "hc1-volume-backup",
        &[],
        &[("HC1_BACKUP_REQUIRE_MOUNT", "1")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(listing(&env.target).is_empty());
    assert!(env.read("mail").contains("is not a mounted file system"));
    assert!(!env.calls().contains("docker volume"), "{}", env.calls());
}

#[test]
fn a_share_is_mounted_for_the_run_only_and_an_unreachable_nas_fails_the_run() {
    let env = setup();
    env.volume("app-data", &[("index.html", "v1")]);
    let host = env.target.join("node1");
    let yesterday = make_backup(
        &host.join("2026-11-26"),
        "app-data",
        &[("index.html", "v0")],
    );
    let before = std::fs::read(&yesterday).unwrap();
    let unit = [
        ("HC1_BACKUP_MOUNT_UNIT", "mnt-backup.mount"),
        ("HC1_BACKUP_SHARE", "nas.lan:/export/hc1"),
    ];
    // The NAS is down: the run fails, mails root, resets the mount unit, touches nothing.
    std::fs::write(env.state.join("nas_down"), "").unwrap();
    let o = env.run("hc1-volume-backup", &[], &unit);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let mail = env.read("mail");
    assert!(
        mail.starts_with("To: root\nSubject: [node1] volume backup FAILED\n")
            && mail.contains(
                "cannot mount the backup share (mnt-backup.mount): is nas.lan:/export/hc1 reachable?"
            ),
        "{mail}"
    );
    let calls = env.calls();
    assert!(
        calls.contains(
            "systemctl start mnt-backup.mount\nsystemctl reset-failed mnt-backup.mount\n"
        ) && !calls.contains("systemctl stop")
            && !calls.contains("docker volume"),
        "{calls}"
    );
    assert_eq!(listing(&host), ["2026-11-26"]);
    assert_eq!(std::fs::read(&yesterday).unwrap(), before);

    // The NAS is back: the next run mounts, backs up, and unmounts afterwards.
    std::fs::remove_file(env.state.join("nas_down")).unwrap();
    std::fs::write(env.state.join("calls"), "").unwrap();
    let o = env.run("hc1-volume-backup", &[], &unit);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let calls = env.calls();
    assert!(
        calls.starts_with("systemctl start mnt-backup.mount\n"),
        "{calls}"
    );
    assert!(
        calls.ends_with("systemctl stop mnt-backup.mount\n"),
        "{calls}"
    );
    assert_eq!(listing(&host.join(DAY)), ["app-data.tar.zst"]);
}

#[test]
fn an_unsynced_clock_is_refused() {
    let env = setup();
    env.volume("app-data", &[("a", "1")]);
    for day in ["1970-01-01", "2023-12-31"] {
        let o = env.run("hc1-volume-backup", &[], &[("HC1_BACKUP_DATE", day)]);
        assert_eq!(o.status.code(), Some(1), "{day}: {}", show(&o));
    }
    assert!(listing(&env.target).is_empty());
    assert!(env.read("mail").contains("unsynced clock"));
    let o = env.run(
        "hc1-volume-backup",
        &[],
        &[("HC1_BACKUP_DATE", "2024-01-01")],
    );
    assert!(o.status.success(), "{}", show(&o));
}

#[test]
fn rsync_mode_sends_over_ssh_and_restores_from_there() {
    tool("rsync");
    let env = setup();
    web_and_db(&env);
    let remote = env.root.join("remote");
    std::fs::create_dir_all(remote.join("node1/2026-10-01")).unwrap();
    std::fs::create_dir_all(remote.join("node2/2026-10-01")).unwrap();
    let dest = format!("backup@nas.lan:{}", remote.display());
    let staging = env.root.join("staging");
    let vars = [
        ("HC1_BACKUP_MODE", "rsync"),
        ("HC1_BACKUP_RSYNC_DEST", dest.as_str()),
        ("HC1_BACKUP_STAGING", staging.to_str().unwrap()),
        ("HC1_BACKUP_SSH_KEY", "/etc/hc1/backup-ssh-key"),
    ];
    let o = env.run("hc1-volume-backup", &[], &vars);
    assert!(o.status.success(), "{}", show(&o));
    let day = remote.join("node1").join(DAY);
    assert_eq!(
        listing(&day),
        [
            "app-data.tar.zst",
            "db-data.tar.zst",
            "mysql-shop_db.1.x7.sql.zst"
        ]
    );
    assert_eq!(unpack(&day.join("app-data.tar.zst"))["index.html"], "hello");
    assert_eq!(
        listing(&remote.join("node1")),
        [DAY],
        "old dir deleted remotely"
    );
    assert_eq!(listing(&remote.join("node2")), ["2026-10-01"]);
    assert!(
        listing(&staging.join("node1")).is_empty(),
        "staging cleaned"
    );
    let ssh = env.read("ssh_calls");
    assert!(
        ssh.contains("-i /etc/hc1/backup-ssh-key -p 22 -o BatchMode=yes")
            && ssh.contains("nas.lan rsync --server"),
        "{ssh}"
    );

    // Restore on another node: the volume there does not exist yet.
    std::fs::remove_dir_all(env.state.join("volumes/app-data")).unwrap();
    let o = env.run("hc1-volume-restore", &["app-data"], &vars);
    assert!(o.status.success(), "{}", show(&o));
    let restored = tree_of(&env.state.join("volumes/app-data"));
    assert_eq!(
        restored.get("index.html").map(String::as_str),
        Some("hello")
    );
    assert_eq!(restored.get("sub/b.txt").map(String::as_str), Some("bee"));
}

#[test]
fn restore_fills_an_empty_volume_from_the_newest_backup_of_any_node() {
    let env = setup();
    make_backup(
        &env.target.join("node1/2026-11-20"),
        "app-data",
        &[("v", "node1 old")],
    );
    make_backup(
        &env.target.join("node2/2026-11-25"),
        "app-data",
        &[("v", "node2 newest"), ("d/e", "deep")],
    );
    make_backup(
        &env.target.join("node3/latest"),
        "app-data",
        &[("v", "not dated")],
    );
    make_backup(
        &env.target.join("node3/2026-11-26"),
        "other",
        &[("v", "another volume")],
    );
    // The volume does not exist on this node: it is created, then filled.
    let o = env.run("hc1-volume-restore", &["app-data"], &[]);
    assert!(o.status.success(), "{}", show(&o));
    let vol = env.state.join("volumes/app-data");
    let got = tree_of(&vol);
    assert_eq!(
        got.get("v").map(String::as_str),
        Some("node2 newest"),
        "{got:?}"
    );
    assert_eq!(got.get("d/e").map(String::as_str), Some("deep"));
    assert_eq!(got.len(), 3, "no leftovers: {got:?}");
    assert!(env.calls().contains("docker volume create app-data\n"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("node2/2026-11-25/app-data.tar.zst"), "{err}");

    // Now it holds data: refused, untouched; --init accepts and leaves it alone.
    std::fs::write(vol.join("v"), "live data").unwrap();
    let o = env.run("hc1-volume-restore", &["app-data"], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(std::fs::read_to_string(vol.join("v")).unwrap(), "live data");
    let o = env.run("hc1-volume-restore", &["--init", "app-data"], &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(std::fs::read_to_string(vol.join("v")).unwrap(), "live data");

    // No backup of a volume: an error, except with --init.
    let o = env.run("hc1-volume-restore", &["nobackup"], &[]);
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    let o = env.run("hc1-volume-restore", &["--init", "nobackup"], &[]);
    assert!(o.status.success(), "{}", show(&o));
    // A damaged archive restores nothing.
    std::fs::create_dir_all(env.target.join("node1/2026-11-27")).unwrap();
    std::fs::write(
        env.target.join("node1/2026-11-27/broken.tar.zst"),
        "not zstd",
    )
    .unwrap();
    let o = env.run("hc1-volume-restore", &["broken"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(listing(&env.state.join("volumes/broken")).is_empty());
    // Bad names and usage.
    assert_eq!(
        env.run("hc1-volume-restore", &["../x"], &[]).status.code(),
        Some(2)
    );
    assert_eq!(
        env.run("hc1-volume-restore", &[], &[]).status.code(),
        Some(2)
    );
}

/// The stack pattern of docs/examples/restore-on-first-start.yml: the service's entrypoint is
/// hc1-volume-restore, which fills the (empty) volume mounted in the container from the
/// backup share mounted read-only, then execs the real entrypoint. Run here exactly as the
/// example file writes it, with the paths mapped into a temporary directory.
#[test]
fn the_documented_stack_pattern_restores_then_starts_the_service() {
    let env = setup();
    let yml =
        std::fs::read_to_string(repo().join("docs/examples/restore-on-first-start.yml")).unwrap();
    let line = yml
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("entrypoint: ["))
        .unwrap_or_else(|| panic!("no `entrypoint: [...]` line in the example:\n{yml}"));
    let argv: Vec<String> = serde_json::from_str(line.trim_start_matches("entrypoint:").trim())
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(argv[0], "/usr/local/bin/hc1-volume-restore", "{argv:?}");
    assert!(yml.contains("/usr/local/bin/hc1-volume-restore:/usr/local/bin/hc1-volume-restore:ro"));
    assert!(yml.contains("/mnt/backup:/backup:ro"));
    assert!(
        yml.contains("nocopy: true"),
        "an image's files must not pre-fill the volume"
    );
    let backup = env.root.join("backup");
    let data = env.root.join("var-lib-mysql");
    let started = env.root.join("started");
    make_backup(
        &backup.join("node1/2026-11-26"),
        "shop-db",
        &[("ibdata1", "pages")],
    );
    // Map the container's paths into the temp dir; replace the image's entrypoint by one that
    // records it ran and what it saw.
    let mapped: Vec<String> = argv[1..]
        .iter()
        .map(|a| match a.as_str() {
            "/backup" => backup.display().to_string(),
            "/var/lib/mysql" => data.display().to_string(),
            _ => a.clone(),
        })
        .collect();
    let sep = mapped
        .iter()
        .position(|a| a == "--")
        .expect("a `--` before the command");
    let mut args: Vec<String> = mapped[..=sep].to_vec();
    let probe = format!(
        "ls {} > {}; echo \"$@\" >> {}",
        data.display(),
        started.display(),
        started.display()
    );
    args.extend(["sh".into(), "-c".into(), probe, "sh".into()]);
    args.extend(mapped[sep + 1..].iter().cloned());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = env.run("hc1-volume-restore", &a, &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        std::fs::read_to_string(data.join("ibdata1")).unwrap(),
        "pages"
    );
    let s = std::fs::read_to_string(&started).unwrap();
    assert!(
        s.starts_with("ibdata1\n"),
        "the service started after the restore: {s}"
    );
    // The next start (data present) skips the restore and still starts the service.
    std::fs::write(data.join("ibdata1"), "newer").unwrap();
    std::fs::remove_file(&started).unwrap();
    let o = env.run("hc1-volume-restore", &a, &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        std::fs::read_to_string(data.join("ibdata1")).unwrap(),
        "newer"
    );
    assert!(started.exists());
    assert!(!env.calls().contains("docker"), "--into needs no docker");
}

#[test]
fn cleanup_prunes_with_the_opt_out_label_and_logs_what_was_freed() {
    let env = setup();
    env.volume("used", &[("a", "1")]);
    env.volume("stale", &[("a", "1")]);
    env.volume("kept", &[("a", "1")]);
    env.volume(&"f".repeat(64), &[]);
    std::fs::write(env.state.join("labels/kept"), "keepme=yes\n").unwrap();
    env.container("c1 web nginx used");
    let o = env.run(
        "hc1-docker-cleanup",
        &[],
        &[("HC1_CLEANUP_KEEP_LABEL", "keepme")],
    );
    assert!(o.status.success(), "{}", show(&o));
    let calls = env.calls();
    for kind in ["container", "image", "volume"] {
        assert!(
            calls.contains(&format!(
                "docker {kind} prune --force --filter label!=keepme"
            )),
            "{calls}"
        );
    }
    assert!(calls.contains("volume prune --force --filter label!=keepme --all\n"));
    assert!(!calls.contains("image prune --force --filter label!=keepme --all"));
    assert_eq!(listing(&env.state.join("volumes")), ["kept", "used"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("hc1-docker-cleanup: volume: stale\n"), "{out}");
    assert!(
        out.contains("freed: container 0B image 1.5MB volume 2kB"),
        "{out}"
    );

    // Anonymous-only volumes and no image pruning.
    env.volume("stale", &[]);
    let o = env.run(
        "hc1-docker-cleanup",
        &[],
        &[
            ("HC1_CLEANUP_VOLUMES", "anonymous"),
            ("HC1_CLEANUP_IMAGES", "none"),
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    assert!(listing(&env.state.join("volumes")).contains(&"stale".to_string()));
    let bad = env.run(
        "hc1-docker-cleanup",
        &[],
        &[("HC1_CLEANUP_VOLUMES", "every")],
    );
    assert_eq!(bad.status.code(), Some(1), "{}", show(&bad));
}

#[test]
fn buildx_setup_creates_then_appends_one_node_per_host() {
    let env = setup();
    let cfg = env.root.join("buildkitd.toml");
    std::fs::write(&cfg, "[registry.\"reg.lan:5000\"]\n  http = true\n").unwrap();
    let vars = [
        (
            "HC1_BUILDX_NODES",
            "hc1-manager-1.cluster.lan hc1-worker-1.cluster.lan",
        ),
        ("HC1_BUILDX_CONFIG", cfg.to_str().unwrap()),
    ];
    let o = env.run("hc1-buildx-setup", &[], &vars);
    assert!(o.status.success(), "{}", show(&o));
    let calls = env.calls();
    let creates: Vec<&str> = calls
        .lines()
        .filter(|l| l.contains("buildx create"))
        .collect();
    let c = cfg.display();
    assert_eq!(
        creates,
        [
            format!(
                "docker buildx create --name hc1 --driver docker-container --node hc1-manager-1 --platform linux/arm/v7 --buildkitd-config {c} ssh://admin@hc1-manager-1.cluster.lan"
            ),
            format!(
                "docker buildx create --name hc1 --driver docker-container --node hc1-worker-1 --platform linux/arm/v7 --buildkitd-config {c} --append ssh://admin@hc1-worker-1.cluster.lan"
            ),
        ]
    );
    assert!(calls.contains("docker buildx inspect --bootstrap hc1\n"));
    // Again, with the builder existing: every node is appended (updated by name).
    std::fs::remove_file(env.state.join("calls")).unwrap();
    let o = env.run("hc1-buildx-setup", &[], &vars);
    assert!(o.status.success(), "{}", show(&o));
    let calls = env.calls();
    assert_eq!(
        calls
            .lines()
            .filter(|l| l.contains("buildx create") && l.contains("--append"))
            .count(),
        2,
        "{calls}"
    );
    let o = env.run("hc1-buildx-setup", &[], &[("HC1_BUILDX_NODES", "")]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
}

#[test]
fn bake_tags_with_todays_date_and_pushes() {
    let env = setup();
    let o = env.run(
        "hc1-bake",
        &["web"],
        &[
            ("HC1_BAKE_REGISTRY", "reg.lan:5000"),
            ("HC1_BAKE_SRC", "/srv/build"),
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    let today =
        String::from_utf8(Command::new("date").arg("+%Y%m%d").output().unwrap().stdout).unwrap();
    assert_eq!(
        env.read("bake_env"),
        format!(
            "TAG={} SRC=/srv/build REGISTRY=reg.lan:5000\n",
            today.trim()
        )
    );
    assert!(
        env.calls().contains(
            "docker buildx bake --builder hc1 --file /etc/hc1/docker-bake.hcl --push web\n"
        )
    );
    let o = env.run("hc1-bake", &["--no-push"], &[("TAG", "20250101")]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        env.read("bake_env")
            .ends_with("TAG=20250101 SRC=/srv/build REGISTRY=unset\n")
    );
    assert!(env.calls().ends_with("--file /etc/hc1/docker-bake.hcl\n"));
}

const SCRIPTS: &[&str] = &[
    "hc1-volume-backup",
    "hc1-volume-restore",
    "hc1-docker-cleanup",
    "hc1-buildx-setup",
    "hc1-bake",
    "hc1-health",
];

#[test]
fn every_script_is_shellcheck_clean_executable_and_has_help() {
    tool("shellcheck");
    let env = setup();
    for s in SCRIPTS {
        let p = script(s);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{s} is not executable in the repo");
        let o = Command::new("shellcheck").arg(&p).output().unwrap();
        assert!(o.status.success(), "shellcheck {s}: {}", show(&o));
        let o = env.run(s, &["--help"], &[]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.starts_with("Usage: "),
            "{s} --help: {}",
            show(&o)
        );
        assert_eq!(env.calls(), "", "{s} --help must not run docker");
    }
    // The restore script is POSIX sh (it also runs inside containers).
    let restore = std::fs::read_to_string(script("hc1-volume-restore")).unwrap();
    assert!(restore.starts_with("#!/bin/sh\n"));
    let o = Command::new("shellcheck")
        .args(["--shell=sh", "--severity=style"])
        .arg(script("hc1-volume-restore"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
}
