//! `verrou` as scripts use it: real processes against the private Redis and PostgreSQL
//! servers of `verrou-testkit`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The documented exit codes.
const FREE: i32 = 1;
const USAGE: i32 = 64;
const UNAVAILABLE: i32 = 69;
const BUSY: i32 = 75;
const LOST: i32 = 76;
const CONFIG: i32 = 78;
const NOT_FOUND: i32 = 127;

/// Longest any one `verrou` of these tests may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// A scratch directory and a lock key no other test uses, and the store to lock in.
struct Scene {
    dir: PathBuf,
    key: String,
    url: String,
}

impl Scene {
    fn new(url: String) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "verrou-cli-{}-{}-{nanos}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            key: name,
            url,
        }
    }

    fn redis() -> Self {
        Self::new(verrou_testkit::redis_url())
    }

    fn postgres() -> Self {
        Self::new(verrou_testkit::postgres_url())
    }

    /// `verrou ARGS...` on this scene's store (through `VERROU_URL`) and key.
    fn verrou(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_verrou"));
        command
            .arg(subcommand)
            .args(["--key", &self.key])
            .args(args)
            .env("VERROU_URL", &self.url)
            .env_remove("VERROU_FENCING_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// `verrou run` of a shell script, started.
    fn start_run(&self, options: &[&str], script: &str) -> Child {
        let mut args = options.to_vec();
        args.extend(["--", "sh", "-c", script]);
        self.verrou("run", &args).spawn().unwrap()
    }

    /// `verrou run` of a shell script, to its end.
    fn run(&self, options: &[&str], script: &str) -> Output {
        finish(self.start_run(options, script))
    }

    /// Whether `verrou status` says held; fails the test on any other answer.
    fn held(&self) -> bool {
        let status = finish(self.verrou("status", &[]).spawn().unwrap());
        match (status.status.code(), stdout(&status).trim()) {
            (Some(0), "held") => true,
            (Some(FREE), "free") => false,
            _ => panic!("status said {status:?}"),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The path of a file in the scratch directory, for a script.
    fn path(&self, name: &str) -> String {
        self.file(name).display().to_string()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits for `child` (at most [`PATIENCE`], then kills it and fails).
fn finish(child: Child) -> Output {
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || sender.send(child.wait_with_output()));
    match receiver.recv_timeout(PATIENCE) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            panic!("verrou (pid {pid}) still running after {PATIENCE:?}");
        }
    }
}

/// Waits until `path` exists.
fn wait_for(path: &Path) {
    let deadline = Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that `output` is a refusal with `code` and one readable line on stderr.
fn assert_refused(output: &Output, code: i32, words: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {text}");
    assert_eq!(text.lines().count(), 1, "not one line: {text}");
    assert!(text.starts_with("verrou: "), "{text}");
    assert!(text.contains(words), "`{words}` not in: {text}");
}

/// A script that says it started, then holds on until the file `go` appears.
fn hold_until_go(scene: &Scene, log: &str) -> String {
    format!(
        "echo start >> {log}; touch {ready}; while [ ! -e {go} ]; do sleep 0.02; done; echo end >> {log}",
        ready = scene.path("ready"),
        go = scene.path("go"),
    )
}

fn second_run_without_wait_is_busy(scene: &Scene) {
    let first = scene.start_run(&[], &hold_until_go(scene, &scene.path("first")));
    wait_for(&scene.file("ready"));

    let second = scene.run(&[], &format!("touch {}", scene.path("second")));
    assert_refused(&second, BUSY, "held elsewhere");
    assert!(!scene.file("second").exists(), "the second job ran");

    std::fs::write(scene.file("go"), "").unwrap();
    assert_eq!(finish(first).status.code(), Some(0));
}

#[test]
fn redis_second_run_without_wait_is_busy() {
    second_run_without_wait_is_busy(&Scene::redis());
}

#[test]
fn postgres_second_run_without_wait_is_busy() {
    second_run_without_wait_is_busy(&Scene::postgres());
}

#[test]
fn second_run_with_wait_runs_after_the_first() {
    let scene = Scene::redis();
    let log = scene.path("log");
    let first = scene.start_run(&[], &hold_until_go(&scene, &log));
    wait_for(&scene.file("ready"));

    let second = scene.start_run(&["--wait", "10s"], &format!("echo second >> {log}"));
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(scene.file("go"), "").unwrap();
    assert_eq!(finish(first).status.code(), Some(0));
    let second = finish(second);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "start\nend\nsecond\n"
    );
}

#[test]
fn a_signal_while_waiting_gives_up_without_running_the_job() {
    let scene = Scene::redis();
    let first = scene.start_run(&[], &hold_until_go(&scene, &scene.path("first")));
    wait_for(&scene.file("ready"));

    let second = scene.start_run(
        &["--wait", "1m"],
        &format!("touch {}", scene.path("second")),
    );
    // Time to connect and start waiting: signals are caught from then on.
    std::thread::sleep(Duration::from_millis(500));
    kill(Pid::from_raw(second.id() as i32), Signal::SIGINT).unwrap();
    assert_refused(&finish(second), 128 + 2, "got SIGINT while waiting");
    assert!(!scene.file("second").exists(), "the second job ran");

    std::fs::write(scene.file("go"), "").unwrap();
    assert_eq!(finish(first).status.code(), Some(0));
}

#[test]
fn the_job_status_is_verrous() {
    let scene = Scene::redis();
    let output = scene.run(&[], "echo out; exit 3");
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(stdout(&output), "out\n");
    assert_eq!(stderr(&output), "");
    assert!(!scene.held());
}

#[test]
fn a_killed_job_gives_128_plus_the_signal_and_the_lock_back() {
    let scene = Scene::postgres();
    let pid_file = scene.path("pid");
    let run = scene.start_run(
        &[],
        &format!("echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 30"),
    );
    wait_for(&scene.file("pid"));
    let job: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(scene.held());

    kill(Pid::from_raw(job), Signal::SIGKILL).unwrap();
    assert_eq!(finish(run).status.code(), Some(128 + 9));
    assert!(!scene.held(), "the lock outlived its job");
}

#[test]
fn sigterm_to_verrou_reaches_the_job() {
    let scene = Scene::redis();
    let script = format!(
        "trap 'echo TERM > {term}; exit 7' TERM; touch {ready}; while :; do sleep 0.02; done",
        term = scene.path("term"),
        ready = scene.path("ready"),
    );
    let run = scene.start_run(&[], &script);
    wait_for(&scene.file("ready"));

    kill(Pid::from_raw(run.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(finish(run).status.code(), Some(7));
    assert_eq!(
        std::fs::read_to_string(scene.file("term")).unwrap(),
        "TERM\n"
    );
    assert!(!scene.held());
}

#[test]
fn a_lost_lock_stops_the_job_and_exits_76() {
    let scene = Scene::redis();
    // The job shrugs SIGTERM off, so verrou has to follow up with SIGKILL.
    let script = format!(
        "trap 'echo TERM >> {term}' TERM; touch {ready}; while :; do sleep 0.02; done",
        term = scene.path("term"),
        ready = scene.path("ready"),
    );
    let run = scene.start_run(&["--ttl", "1s", "--kill-after", "300ms"], &script);
    wait_for(&scene.file("ready"));

    let release = finish(scene.verrou("release", &["--force"]).spawn().unwrap());
    assert_eq!(release.status.code(), Some(0), "{}", stderr(&release));
    let started = Instant::now();
    let run = finish(run);
    assert_eq!(run.status.code(), Some(LOST), "{}", stderr(&run));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let said = stderr(&run);
    assert!(said.contains("lost while the job was running"), "{said}");
    assert!(said.contains("sent SIGKILL"), "{said}");
    assert!(said.contains("exited with status 137"), "{said}");
    assert_eq!(
        std::fs::read_to_string(scene.file("term")).unwrap(),
        "TERM\n"
    );
}

fn fencing_token_grows_between_runs(scene: &Scene) {
    let token = || {
        let output = scene.run(&[], "echo \"$VERROU_KEY $VERROU_FENCING_TOKEN\"");
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let said = stdout(&output);
        let (key, token) = said.trim().split_once(' ').unwrap();
        assert_eq!(key, scene.key);
        token.parse::<u64>().unwrap()
    };
    let first = token();
    let second = token();
    assert!(second > first, "{second} after {first}");
}

#[test]
fn redis_fencing_token_grows_between_runs() {
    fencing_token_grows_between_runs(&Scene::redis());
}

#[test]
fn postgres_fencing_token_grows_between_runs() {
    fencing_token_grows_between_runs(&Scene::postgres());
}

#[test]
fn a_missing_program_is_127_and_the_lock_is_given_back() {
    let scene = Scene::redis();
    let output = finish(
        scene
            .verrou("run", &["--", "/nonexistent/job"])
            .spawn()
            .unwrap(),
    );
    assert_refused(&output, NOT_FOUND, "cannot run `/nonexistent/job`");
    assert!(!scene.held());
}

#[test]
fn a_config_file_names_the_store() {
    let scene = Scene::redis();
    let config = scene.file("locks.toml");
    std::fs::write(
        &config,
        format!(
            "default = \"local\"\n\
             [stores.local]\ndriver = \"memory\"\n\
             [stores.shared]\ndriver = \"redis\"\nurl = \"{}\"\n",
            scene.url
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let run = |store: &[&str]| {
        let mut args = vec!["--config", &config];
        args.extend(store);
        args.extend(["--", "sh", "-c", "echo ran"]);
        finish(
            scene
                .verrou("run", &args)
                .env_remove("VERROU_URL")
                .spawn()
                .unwrap(),
        )
    };

    let shared = run(&["--store", "shared"]);
    assert_eq!(shared.status.code(), Some(0), "{}", stderr(&shared));
    assert_eq!(stdout(&shared), "ran\n");

    assert_refused(&run(&[]), CONFIG, "store `local` is a memory store");
    assert_refused(&run(&["--store", "nope"]), CONFIG, "unknown store `nope`");

    // Environment variables override the file, as in the library: a deployment keeps the
    // URL (and its password) out of the file.
    let mut args = vec!["--config", config.as_str(), "--store", "shared"];
    args.extend(["--", "true"]);
    let elsewhere = finish(
        scene
            .verrou("run", &args)
            .env_remove("VERROU_URL")
            .env("VERROU_STORES__SHARED__URL", "redis://127.0.0.1:1")
            .spawn()
            .unwrap(),
    );
    assert_refused(&elsewhere, UNAVAILABLE, "redis://127.0.0.1:1");
}

#[test]
fn bad_stores_are_refused_with_their_codes() {
    let scene = Scene::redis();
    let marker = scene.path("ran");
    let attempt = |store: &[&str]| {
        let mut args = store.to_vec();
        args.extend(["--", "touch", &marker]);
        finish(
            scene
                .verrou("run", &args)
                .env_remove("VERROU_URL")
                .spawn()
                .unwrap(),
        )
    };
    let cases: [(&[&str], i32, &str); 7] = [
        (&["--url", "memory:"], CONFIG, "exclude nothing"),
        (
            &["--url", "http://user:secret@host"],
            CONFIG,
            "unsupported store URL scheme `http:`",
        ),
        (&["--url", "redis://"], CONFIG, "no host"),
        (
            &["--url", "redis://127.0.0.1:1"],
            UNAVAILABLE,
            "could not connect to Redis",
        ),
        (
            &["--config", "/nonexistent/locks.toml"],
            CONFIG,
            "/nonexistent/locks.toml",
        ),
        (&[], USAGE, "no store"),
        (
            &["--url", "redis://h", "--ttl", "10 parsecs"],
            USAGE,
            "invalid value '10 parsecs' for '--ttl",
        ),
    ];
    for (store, code, words) in cases {
        let output = attempt(store);
        assert_refused(&output, code, words);
        assert!(!stderr(&output).contains("secret"), "{}", stderr(&output));
    }
    assert!(!scene.file("ran").exists(), "a job ran");

    let release = finish(scene.verrou("release", &[]).spawn().unwrap());
    assert_refused(&release, USAGE, "release needs --force");
}

#[test]
fn help_documents_the_exit_codes_and_completions_print() {
    let help = Command::new(env!("CARGO_BIN_EXE_verrou"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
    let help = stdout(&help);
    for code in ["64", "69", "70", "75", "76", "78", "126", "127", "128+N"] {
        assert!(
            help.contains(&format!("\n  {code} ")),
            "exit code {code} missing"
        );
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for code in ["64", "69", "70", "75", "76", "78", "126", "127", "128+N"] {
        assert!(
            readme.contains(&format!("| {code} |")),
            "exit code {code} missing from README"
        );
    }

    for shell in ["bash", "zsh", "fish"] {
        let script = Command::new(env!("CARGO_BIN_EXE_verrou"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(script.status.code(), Some(0));
        assert!(stdout(&script).contains("--on-lost"), "{shell}");
    }
}
