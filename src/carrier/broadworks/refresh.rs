//! The Xsi-Events lifetime requests: refreshing the channel
//! (`PUT …/channel/{channelId}`) and each subscription (`PUT …/subscription/{id}`) with
//! `expires`, re-subscribing a user whose subscription is gone, and deleting the channel
//! when the adapter stops. Outcomes go back into the `lifetime` schedule.
//!
//! Must never: panic on an answer, log a credential, or hold a std lock across an `.await`.

use std::sync::Arc;
use std::time::Instant;

use reqwest::Method;

use super::actions::seg;
use super::events::{subscribe, Shared};
use super::lifetime::{granted, Due};
use super::xml;
use crate::carrier::CarrierError;

fn gone(e: &CarrierError) -> bool {
    matches!(e, CarrierError::Refused { status: 404, .. })
}

/// Carry out one piece of due work; `false` when the channel is gone (404 on its refresh).
pub async fn run(sh: Arc<Shared>, due: Due) -> bool {
    match due {
        Due::Channel(id) => channel(&sh, &id).await,
        Due::Subscription { user, id } => {
            subscription(&sh, &user, &id).await;
            true
        }
        Due::Subscribe(user) => {
            match subscribe(&sh, &user).await {
                Ok(id) => tracing::info!(user, subscription = %id, "xsi: subscribed again"),
                Err(e) => {
                    tracing::warn!(user, error = %e, "xsi: re-subscription failed");
                    let t = sh.timing;
                    sh.with_lives(|l| l.sub_failed(&user, |n| t.backoff(n), Instant::now()));
                }
            }
            true
        }
    }
}

async fn channel(sh: &Shared, id: &str) -> bool {
    let url = sh.client.events_url(&format!("/channel/{}", seg(id)));
    let body = xml::channel_refresh_body(sh.timing.expires_secs());
    match sh
        .client
        .send("channel refresh", Method::PUT, &url, Some(body))
        .await
    {
        Ok(answer) => {
            let g = granted(xml::parse_refresh(&answer), sh.timing.expires);
            tracing::debug!(channel = %id, secs = g.as_secs(), "xsi: channel refreshed");
            sh.with_lives(|l| l.channel_refreshed(g, Instant::now()));
            true
        }
        Err(e) if gone(&e) => {
            tracing::warn!(channel = %id, "xsi: channel refresh answered 404");
            false
        }
        Err(e) => {
            tracing::warn!(channel = %id, error = %e, "xsi: channel refresh failed");
            let t = sh.timing;
            sh.with_lives(|l| l.channel_refresh_failed(|n| t.backoff(n), Instant::now()));
            true
        }
    }
}

async fn subscription(sh: &Shared, user: &str, id: &str) {
    let url = sh.client.events_url(&format!("/subscription/{}", seg(id)));
    let body = xml::subscription_refresh_body(sh.timing.expires_secs());
    match sh
        .client
        .send("subscription refresh", Method::PUT, &url, Some(body))
        .await
    {
        Ok(answer) => {
            let g = granted(xml::parse_refresh(&answer), sh.timing.expires);
            tracing::debug!(user, secs = g.as_secs(), "xsi: subscription refreshed");
            sh.with_lives(|l| l.sub_refreshed(user, g, Instant::now()));
        }
        Err(e) if gone(&e) => {
            tracing::warn!(
                user,
                "xsi: subscription refresh answered 404, subscribing again"
            );
            sh.with_lives(|l| l.sub_gone(user, Instant::now()));
        }
        Err(e) => {
            tracing::warn!(user, error = %e, "xsi: subscription refresh failed");
            let t = sh.timing;
            sh.with_lives(|l| l.sub_failed(user, |n| t.backoff(n), Instant::now()));
        }
    }
}

/// `DELETE …/channel/{channelId}`, best effort (the adapter is stopping).
pub async fn delete_channel(sh: &Shared, id: &str) {
    let url = sh.client.events_url(&format!("/channel/{}", seg(id)));
    match sh
        .client
        .send("channel delete", Method::DELETE, &url, None)
        .await
    {
        Ok(_) => tracing::info!(channel = %id, "xsi: event channel deleted"),
        Err(e) => tracing::debug!(channel = %id, error = %e, "xsi: channel delete failed"),
    }
}
