//! Progress lines to the engine's Log service, in order, delivered before an operation
//! answers.

use std::sync::{Arc, Mutex};

use pulumi_gestalt_proto::pulumi::pulumirpc::{
    self as rpc, engine_client::EngineClient, LogSeverity,
};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::copy::progress::Progress;
use crate::copy::retry::Attempts;
use crate::resources::secrets::Secrets;

/// Progress sent to the engine's Log service, in order, by one background task.
pub(super) struct EngineLog {
    sender: Mutex<Option<mpsc::UnboundedSender<rpc::LogRequest>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    urn: String,
}

impl EngineLog {
    pub fn start(address: Option<String>, urn: String) -> EngineLog {
        let Some(address) = address else {
            return EngineLog {
                sender: Mutex::new(None),
                task: Mutex::new(None),
                urn,
            };
        };
        let (sender, mut receiver) = mpsc::unbounded_channel::<rpc::LogRequest>();
        let task = tokio::spawn(async move {
            let Ok(channel) = Channel::from_shared(format!("http://{address}")) else {
                return;
            };
            let Ok(channel) = channel.connect().await else {
                return;
            };
            let mut client = EngineClient::new(channel);
            while let Some(request) = receiver.recv().await {
                let _ = client.log(request).await;
            }
        });
        EngineLog {
            sender: Mutex::new(Some(sender)),
            task: Mutex::new(Some(task)),
            urn,
        }
    }

    fn send(&self, severity: LogSeverity, message: &str, ephemeral: bool) {
        if let Some(sender) = &*self.sender.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = sender.send(rpc::LogRequest {
                severity: severity as i32,
                message: message.to_string(),
                urn: self.urn.clone(),
                stream_id: 0,
                ephemeral,
            });
        }
    }

    /// Closes the channel and waits until every line has reached the engine.
    pub async fn finish(&self) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Diff and Read plan only to learn whether anything is pending; their kept lines would
/// repeat what the preview or update prints, so only the passing status (a long scan's
/// count and rate) and warnings get through.
pub(super) struct StatusAndWarnings(pub Arc<dyn Progress>);

impl Progress for StatusAndWarnings {
    fn status(&self, message: &str) {
        self.0.status(message);
    }
    fn info(&self, _: &str) {}
    fn warn(&self, message: &str) {
        self.0.warn(message);
    }
}

impl Progress for EngineLog {
    fn status(&self, message: &str) {
        self.send(LogSeverity::Info, message, true);
    }
    fn info(&self, message: &str) {
        self.send(LogSeverity::Info, message, false);
    }
    fn warn(&self, message: &str) {
        self.send(LogSeverity::Warning, message, false);
    }
    fn debug(&self, message: &str) {
        self.send(LogSeverity::Debug, message, false);
    }
}

/// Status lines with the operation's retries, so throttling shows while it happens.
pub(super) struct WithRetries {
    pub inner: Arc<dyn Progress>,
    pub attempts: Arc<Attempts>,
}

impl Progress for WithRetries {
    fn status(&self, message: &str) {
        match (self.attempts.retries(), self.attempts.throttles()) {
            (0, _) => self.inner.status(message),
            (retries, throttles) => self.inner.status(&format!(
                "{message}; {retries} requests retried ({throttles} throttled)"
            )),
        }
    }
    fn info(&self, message: &str) {
        self.inner.info(message);
    }
    fn warn(&self, message: &str) {
        self.inner.warn(message);
    }
    fn debug(&self, message: &str) {
        self.inner.debug(message);
    }
}

/// Progress with every value from a secret masked.
pub(super) struct Masked {
    pub inner: Arc<dyn Progress>,
    pub secrets: Secrets,
}

impl Progress for Masked {
    fn status(&self, message: &str) {
        self.inner.status(&self.secrets.mask(message));
    }
    fn info(&self, message: &str) {
        self.inner.info(&self.secrets.mask(message));
    }
    fn warn(&self, message: &str) {
        self.inner.warn(&self.secrets.mask(message));
    }
    fn debug(&self, message: &str) {
        self.inner.debug(&self.secrets.mask(message));
    }
}
