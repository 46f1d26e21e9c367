//! A gateway run as a child process that logs to a file and reads a configuration file the
//! test can change while it runs.

use super::{Client, Running, TestApp, TestAppBuilder};
use crate::support::{self, GatewayProcess};
use std::path::PathBuf;

impl TestAppBuilder {
    /// Spawns the gateway as a child process (see [`TestAppBuilder::child_process`]) reading
    /// [`TestApp::child_config_file`] and writing its log to [`TestApp::log_file`].
    pub async fn spawn_logging(mut self) -> TestApp {
        self.child_process = true;
        let mut app = self.spawn_stopped().await;
        let port = app.settings.port.unwrap_or_else(support::free_port);
        let config = app.child_config_file();
        std::fs::write(&config, app.yaml(Some(port))).unwrap();
        let log = app.log_file();
        let child = GatewayProcess::spawn_logging_to(&config, port, Some(&log)).await;
        app.running = Running::Child(child);
        app.client = Client::new(app.gateway(), &app.agent_key());
        app
    }
}

impl TestApp {
    /// The configuration file of a gateway spawned with [`TestAppBuilder::spawn_logging`].
    pub fn child_config_file(&self) -> PathBuf {
        self.dir().join("gateway.yaml")
    }

    /// The log of a gateway spawned with [`TestAppBuilder::spawn_logging`].
    pub fn log_file(&self) -> PathBuf {
        self.dir().join("gateway.log")
    }

    /// Rewrites [`TestApp::child_config_file`] with `change` made to the settings, under the
    /// running gateway (which applies it only when restarted).
    pub fn change_config(&mut self, change: impl FnOnce(TestAppBuilder) -> TestAppBuilder) {
        self.settings = change(self.settings.clone());
        let port = self.gateway().addr.port();
        std::fs::write(self.child_config_file(), self.yaml(Some(port))).unwrap();
    }
}
