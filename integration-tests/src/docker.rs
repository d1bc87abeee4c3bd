//! The last resort for a service: a container, where a Docker engine answers.

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};

/// A container this test started; removed when dropped.
pub struct DockerService {
    container: Option<Container<GenericImage>>,
    host: String,
    port: u16,
}

impl std::fmt::Debug for DockerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerService")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

impl DockerService {
    /// Starts `image:tag` with `cmd`, exposing `port`, and waits for `ready` on its output.
    ///
    /// testcontainers' blocking API runs its own Tokio runtime, which must not start inside the
    /// test's: it runs on a thread of its own.
    pub fn start(
        image: &str,
        tag: &str,
        port: u16,
        ready: WaitFor,
        cmd: Vec<String>,
    ) -> Result<DockerService, String> {
        let (image, tag) = (image.to_owned(), tag.to_owned());
        std::thread::spawn(move || {
            let container = GenericImage::new(image, tag)
                .with_exposed_port(port.tcp())
                .with_wait_for(ready)
                .with_cmd(cmd)
                .start()
                .map_err(|e| format!("docker: {e}"))?;
            let host = container
                .get_host()
                .map_err(|e| format!("docker: {e}"))?
                .to_string();
            let port = container
                .get_host_port_ipv4(port)
                .map_err(|e| format!("docker: {e}"))?;
            Ok(DockerService {
                container: Some(container),
                host,
                port,
            })
        })
        .join()
        .unwrap_or_else(|_| Err("docker: the starter thread panicked".to_owned()))
    }

    /// Where the mapped port answers.
    pub fn address(&self) -> (&str, u16) {
        (&self.host, self.port)
    }
}

impl Drop for DockerService {
    fn drop(&mut self) {
        // Removing the container blocks on testcontainers' runtime: not on the test's thread.
        if let Some(container) = self.container.take() {
            let _ = std::thread::spawn(move || drop(container)).join();
        }
    }
}
