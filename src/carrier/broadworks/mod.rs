//! BroadWorks Xsi adapter (kind `broadworks`): Xsi-Actions over HTTP(S) with Basic auth and
//! an Xsi-Events channel. PLACEHOLDER while the adapter is written: every action fails.

use futures::future::BoxFuture;
use tokio::sync::broadcast;

use super::{CallInfo, Carrier, CarrierError, CarrierEvent, CarrierResult};
use crate::config::CarrierConfig;

pub struct Broadworks {
    id: String,
    events: broadcast::Sender<CarrierEvent>,
}

impl Broadworks {
    pub fn from_config(c: &CarrierConfig) -> anyhow::Result<Broadworks> {
        Ok(Broadworks {
            id: c.id.clone(),
            events: broadcast::channel(64).0,
        })
    }
}

fn no<T: Send + 'static>(action: &'static str) -> BoxFuture<'static, CarrierResult<T>> {
    Box::pin(async move { Err(CarrierError::Unsupported { action }) })
}

impl Carrier for Broadworks {
    fn id(&self) -> &str {
        &self.id
    }
    fn hold<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, CarrierResult<()>> {
        no("Hold")
    }
    fn resume<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, CarrierResult<()>> {
        no("Talk")
    }
    fn originate<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, CarrierResult<String>> {
        no("new")
    }
    fn blind_transfer<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, CarrierResult<()>> {
        no("BlindTransfer")
    }
    fn hang_up<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, CarrierResult<()>> {
        no("Release")
    }
    fn reconnect<'a>(&'a self, _: &'a str) -> BoxFuture<'a, CarrierResult<()>> {
        no("Reconnect")
    }
    fn calls<'a>(&'a self, _: &'a str) -> BoxFuture<'a, CarrierResult<Vec<CallInfo>>> {
        no("calls")
    }
    fn call<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, CarrierResult<CallInfo>> {
        no("call")
    }
    fn watch<'a>(&'a self, _: &'a str) -> BoxFuture<'a, CarrierResult<()>> {
        no("subscribe")
    }
    fn events(&self) -> broadcast::Receiver<CarrierEvent> {
        self.events.subscribe()
    }
    fn user_uri(&self, _: &str) -> Option<String> {
        None
    }
}
