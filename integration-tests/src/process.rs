//! Servers run as child processes on loopback.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to say it is ready.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// A free TCP port on 127.0.0.1, as the OS hands one out. Another process could take it before
/// the server binds it; [`LocalServer::start`] callers retry on a failed start.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A server process this test started; killed (by its own PID) and its directory removed on drop.
#[derive(Debug)]
pub struct LocalServer {
    name: &'static str,
    program: String,
    args: Vec<String>,
    child: Child,
    dir: TempDir,
    log: PathBuf,
}

impl LocalServer {
    /// Starts `program` with `args` in a new temporary directory, its output going to a log file
    /// there, and waits until `ready(log_text)` holds. Returns the failure, with the log, if the
    /// process exits first or is not ready by the deadline.
    pub fn start(
        name: &'static str,
        program: &str,
        args: &[String],
        dir: TempDir,
        ready: impl Fn(&str) -> bool,
    ) -> Result<LocalServer, String> {
        let log = dir.path().join(format!("{name}.log"));
        let child = spawn(program, args, dir.path(), &log)?;
        let mut server = LocalServer {
            name,
            program: program.to_owned(),
            args: args.to_vec(),
            child,
            dir,
            log,
        };
        server.wait_ready(ready)?;
        Ok(server)
    }

    /// Kills the process and starts it again with the same arguments in the same directory (a
    /// Redis Cluster node keeps its `nodes.conf`, not its data), waiting until `ready` holds
    /// for the new log.
    pub fn restart(&mut self, ready: impl Fn(&str) -> bool) -> Result<(), String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.program, &self.args, self.dir.path(), &self.log)?;
        self.wait_ready(ready)
    }

    fn wait_ready(&mut self, ready: impl Fn(&str) -> bool) -> Result<(), String> {
        let name = self.name;
        let server = self;
        let started = Instant::now();
        loop {
            let text = server.log_text();
            if ready(&text) {
                return Ok(());
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "{name} exited ({status}) before it was ready:\n{text}"
                ));
            }
            if started.elapsed() > STARTUP_DEADLINE {
                return Err(format!(
                    "{name} was not ready after {STARTUP_DEADLINE:?}:\n{text}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Everything the server has logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill() {
            eprintln!(
                "could not stop {} (pid {}): {e}",
                self.name,
                self.child.id()
            );
        }
        let _ = self.child.wait();
    }
}

/// Starts `program` in `dir`, its output (both streams) replacing the log file `log`.
fn spawn(program: &str, args: &[String], dir: &Path, log: &Path) -> Result<Child, String> {
    let out = fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("could not run {program}: {e}"))
}

/// Whether `program` can be run from `PATH`.
pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
