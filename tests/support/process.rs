//! Servers started by tests, stopped when the test process goes away however it ends.
//!
//! Each server runs under a tiny `sh` supervisor that reads our end of a pipe: when the test
//! process exits (even by SIGKILL) the pipe closes, `read` returns and the supervisor stops the
//! server: SIGTERM, and SIGKILL 5 s later for a server that does not stop (kube-apiserver whose
//! etcd went first hung on its SIGTERM; 166 of them had piled up on this machine). This needs no
//! unsafe `prctl` and leaves no stray etcd or apiserver behind.

use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
};

// fd 3 keeps our pipe: a background job's stdin is /dev/null in a non-interactive shell.
// The supervisor exits with the server, so a server that dies is seen at once.
const SUPERVISOR: &str = r#"exec 3<&0
"$@" 3<&- </dev/null &
pid=$!
{ read -r _ignored <&3; kill -TERM "$pid" 2>/dev/null; sleep 5; kill -KILL "$pid" 2>/dev/null; } &
watcher=$!
exec 3<&-
wait "$pid"
status=$?
kill "$watcher" 2>/dev/null
exit "$status""#;

pub struct Server {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl Server {
    /// Starts `bin args...` with stdout and stderr to `log`.
    pub fn start(name: &str, bin: &Path, args: &[String], log: &Path) -> Server {
        let out = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("duplicating the log file handle");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("sh")
            .arg(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", bin.display()));
        let stdin = child.stdin.take();
        Server { name: name.to_string(), child, stdin, log: log.to_path_buf() }
    }

    /// Whether the server (its supervisor) is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `max` bytes of the server's log, for failure messages.
    pub fn log_tail(&self, max: usize) -> String {
        log_tail(&self.log, max)
    }

    /// The served program's pid (the supervisor's child).
    pub fn pid(&self) -> Option<u32> {
        let sh = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Resident memory of the server process (the supervisor's child), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops the server and waits for it.
    pub fn stop(&mut self) {
        self.stdin.take(); // EOF on the supervisor's stdin stops the server
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn log_tail(path: &Path, max: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let start = s.len().saturating_sub(max);
    let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
    s[start..].to_string()
}
