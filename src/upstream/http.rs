use super::inflight::Exchange;
use super::{ClientContext, UpstreamError};
use crate::config::{HttpUpstreamConfig, UpstreamConfig};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
pub struct HttpTransport;
impl HttpTransport {
    pub async fn start(
        _c: &UpstreamConfig,
        _h: &HttpUpstreamConfig,
        _s: CancellationToken,
    ) -> Result<Self, UpstreamError> {
        todo!()
    }
    pub async fn request(&self, _r: Value, _c: &ClientContext) -> Result<Exchange, UpstreamError> {
        todo!()
    }
    pub async fn notify(&self, _r: Value, _c: &ClientContext) -> Result<(), UpstreamError> {
        todo!()
    }
    pub async fn respond(&self, _r: Value) -> Result<(), UpstreamError> {
        todo!()
    }
    pub fn events(&self) -> broadcast::Receiver<Value> {
        todo!()
    }
    pub fn capabilities(&self) -> Value {
        todo!()
    }
    pub fn is_healthy(&self) -> bool {
        todo!()
    }
}
