//! What every request handler of the gateway shares: the SLAP context, the masters, the
//! metrics, who is refused and who is an admin, and the group's gateways it advertises.

use std::sync::Arc;

use axum::http::HeaderValue;

use super::master::Masters;
use super::metrics::Metrics;
use crate::slap::SlapContext;

/// What every request handler shares.
pub struct App {
    pub ctx: SlapContext,
    /// `""` or `/prefix`.
    pub prefix: String,
    pub max_body_bytes: usize,
    pub masters: Masters,
    pub metrics: Arc<Metrics>,
    /// With client certificates: the revoked serials (also checked per request, since a
    /// keep-alive connection outlives a revocation).
    pub revoked: Option<super::tls::Revoked>,
    /// The persons the group records as admins, kept fresh from the masters (never read
    /// from this gateway's configuration).
    pub admins: super::tls::Admins,
    /// The group's gateways, sent to every caller in `X-Slapos-Gateways` (node agents
    /// learn them); empty until known, or when no member names a gateway.
    pub gateways: GatewayList,
    /// Long polls of node views held now, and what wakes them.
    pub views: super::views::Views,
    /// The releases it serves (`[releases]`), when it serves any.
    pub releases: Option<crate::releases::ReleaseStore>,
}

/// The `X-Slapos-Gateways` value: the group's gateway URLs, space-separated.
#[derive(Clone, Default)]
pub struct GatewayList(Arc<std::sync::RwLock<Option<HeaderValue>>>);

impl GatewayList {
    /// Keeps `urls` (none: nothing is sent); true when that changed the list a known
    /// list (the first one learned is no change).
    pub fn set(&self, urls: &[String]) -> bool {
        let value = (!urls.is_empty())
            .then(|| HeaderValue::from_str(&urls.join(" ")).ok())
            .flatten();
        match self.0.write() {
            Ok(mut v) => {
                let changed = v.is_some() && *v != value;
                *v = value;
                changed
            }
            Err(_) => false,
        }
    }

    pub(super) fn get(&self) -> Option<HeaderValue> {
        self.0.read().ok().and_then(|v| v.clone())
    }
}

/// The response header that lists the group's gateways.
pub const GATEWAYS_HEADER: &str = "x-slapos-gateways";
