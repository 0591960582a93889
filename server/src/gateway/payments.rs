//! `POST /payments/{provider}`: a payment provider's signed notification
//! (docs/gateway.md). A payment is recorded once by its provider's id
//! (a notification sent again answers the same and grants nothing more),
//! then delivered through the player's inbox, where the player's session
//! applies it exactly once, journaled. A refund or a chargeback revokes
//! it: an item not yet claimed is never applied; one applied is taken
//! back (as much as the player still holds) by a refund item; the account
//! is flagged for customer support.
//!
//! Delivery after recording is retried: at once, then by a sweep every
//! [`SWEEP_INTERVAL`] over payments recorded and not delivered (a gateway
//! that died in between, an inbox that was full), by whichever gateway
//! runs it: every step is idempotent.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use citadel_store::world::{InboxItem, InboxPut, InboxRevoke, Payment, PaymentState};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{internal, Gateway, Refused};
use crate::protocol::{ApiError, Code};

/// The header carrying the signature (`t=<unix seconds>,v1=<hex>`).
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// How often undelivered payments are delivered again.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Payments one sweep delivers at most: the rest wait for the next one.
pub const SWEEP_BATCH: usize = 100;

/// The longest payment id taken: providers' ids are 20 to 40 characters.
pub const PAYMENT_ID_BYTES_MAX: usize = 128;

/// How long a purchase waits in the inbox of a player who does not come
/// back: ten years (a paid item must not expire).
pub const PURCHASE_TTL_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

/// The inbox cap a purchase or a refund is put with: none. Paid-for items
/// are never turned away by a full inbox (other senders' cap is
/// `INBOX_UNCLAIMED_MAX`); a player has few payments.
const NO_CAP: usize = i64::MAX as usize;

/// A notification, in the form documented in docs/gateway.md.
#[derive(Debug, Deserialize)]
struct Notification {
    #[serde(rename = "type")]
    kind: String,
    payment: Described,
}

#[derive(Debug, Deserialize)]
struct Described {
    id: String,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    product: Option<String>,
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    currency: String,
}

/// The inbox item ids of a payment's purchase and of its refund: derived
/// from the provider and the payment id, short whatever they are.
fn item_ids(provider: &str, id: &str) -> (String, String) {
    let digest = Sha256::digest(format!("{provider} {id}").as_bytes());
    let h: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    (format!("purchase-{h}"), format!("refund-{h}"))
}

fn bad(message: impl Into<String>) -> Refused {
    ApiError::new(Code::BadRequest, message).into()
}

/// The endpoint.
pub async fn notify(
    State(g): State<Arc<Gateway>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refused> {
    let Some(p) = g.config.gateway.payments.iter().find(|p| p.name == provider) else {
        return Err(ApiError::new(Code::UnknownProvider, format!("no payment provider `{provider}`")).into());
    };
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    let secrets: Vec<Vec<u8>> = p.secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
    if let Err(e) = super::signature::verify(header, &body, &secrets, g.clock.now_ms().div_euclid(1000)) {
        let code = match e {
            super::signature::SignatureError::Malformed => Code::SignatureMalformed,
            super::signature::SignatureError::Stale => Code::SignatureStale,
            super::signature::SignatureError::Mismatch => Code::SignatureMismatch,
        };
        tracing::warn!(%provider, code = e.code(), "a payment notification was refused");
        return Err(ApiError::new(code, format!("the `{SIGNATURE_HEADER}` header does not check: {}", e.code())).into());
    }
    let n: Notification = super::parse(&body, g.config.limits.message_bytes_max)?;
    let id = &n.payment.id;
    if id.is_empty() || id.len() > PAYMENT_ID_BYTES_MAX || id.chars().any(char::is_control) {
        return Err(bad(format!("payment.id must be 1 to {PAYMENT_ID_BYTES_MAX} bytes of printable text")));
    }
    let payment = match n.kind.as_str() {
        "payment.succeeded" => record(&g, &provider, &n.payment).await?,
        "payment.refunded" | "payment.charged_back" => {
            let reason = if n.kind == "payment.refunded" { "refund" } else { "chargeback" };
            revoke(&g, &provider, id, reason).await?
        }
        other => {
            return Err(bad(format!(
                "unknown notification type `{other}`: payment.succeeded, payment.refunded, payment.charged_back"
            )))
        }
    };
    Ok(axum::Json(json!({ "payment": payment.id, "state": payment.state })).into_response())
}

/// Records a successful payment (once), then delivers it.
async fn record(g: &Gateway, provider: &str, d: &Described) -> Result<Payment, Refused> {
    let missing = |f: &str| bad(format!("payment.{f} is required for payment.succeeded"));
    let title_id = d.title.as_deref().ok_or_else(|| missing("title"))?;
    let account = d.account.as_deref().ok_or_else(|| missing("account"))?;
    let product = d.product.as_deref().ok_or_else(|| missing("product"))?;
    if let Some(known) = g.world.payment(provider, &d.id).await.map_err(internal)? {
        // Sent again: the same answer; delivery goes on if it had not.
        return deliver(g, known).await;
    }
    let title =
        g.titles.get(title_id).ok_or_else(|| ApiError::new(Code::UnknownTitle, format!("no title `{title_id}`")))?;
    let Some(grants) = title.product(product).map(|p| p.grants.clone()) else {
        let ids: Vec<&str> = title.products.iter().map(|p| p.id.as_str()).collect();
        return Err(ApiError::new(Code::UnknownProduct, format!("`{title_id}` sells no product `{product}`"))
            .details(json!({ "products": ids }))
            .into());
    };
    if g.world.account(account).await.map_err(internal)?.is_none() {
        return Err(ApiError::new(Code::UnknownAccount, format!("no account `{account}`")).into());
    }
    let fresh = format!("p{}", super::hex(&super::random::<10>()?));
    let player = g.world.title_player(account, title_id, &fresh).await.map_err(internal)?;
    let payment = Payment {
        provider: provider.to_string(),
        id: d.id.clone(),
        account: account.to_string(),
        title: title_id.to_string(),
        player,
        product: product.to_string(),
        resources: grants.resources,
        items: grants.items,
        amount: d.amount,
        currency: d.currency.chars().take(8).collect(),
        state: PaymentState::Recorded,
        created_ms: g.clock.now_ms(),
        delivered_ms: None,
        revoked_ms: None,
        revoked_reason: String::new(),
    };
    let payment = if g.world.record_payment(&payment).await.map_err(internal)? {
        tracing::info!(%provider, id = %payment.id, account, product, "payment recorded");
        payment
    } else {
        // A racing gateway recorded it first.
        g.world.payment(provider, &d.id).await.map_err(internal)?.ok_or_else(|| internal("a payment vanished"))?
    };
    deliver(g, payment).await
}

/// Puts a recorded payment's purchase in the player's inbox and marks it
/// delivered; a payment revoked meanwhile is revoked in the inbox too.
/// Answers the payment as it now is.
pub async fn deliver(g: &Gateway, mut p: Payment) -> Result<Payment, Refused> {
    if p.state != PaymentState::Recorded {
        return Ok(p);
    }
    let (purchase, _) = item_ids(&p.provider, &p.id);
    let item = InboxItem {
        id: purchase,
        title: p.title.clone(),
        player: p.player.clone(),
        kind: "purchase".into(),
        from: p.provider.clone(),
        body: json!({ "payment": p.id, "product": p.product }),
        resources: p.resources.clone(),
        items: p.items.clone(),
        created_ms: g.clock.now_ms(),
        expires_ms: g.clock.now_ms() + PURCHASE_TTL_MS,
        claimed_ms: None,
        revoked_ms: None,
    };
    match g.world.put_inbox(&item, NO_CAP).await.map_err(internal)? {
        InboxPut::Added => crate::relay::inbox_wake_on(&g.bus, &p.title, &p.player).await,
        InboxPut::Exists => {}
        // No cap is asked for; should a store still refuse, the sweep retries.
        InboxPut::Full => return Ok(p),
    }
    let now = g.clock.now_ms();
    if g.world
        .payment_moved(&p.provider, &p.id, PaymentState::Recorded, PaymentState::Delivered, now, "")
        .await
        .map_err(internal)?
    {
        p.state = PaymentState::Delivered;
        p.delivered_ms = Some(now);
        return Ok(p);
    }
    let now_is =
        g.world.payment(&p.provider, &p.id).await.map_err(internal)?.ok_or_else(|| internal("a payment vanished"))?;
    if now_is.state == PaymentState::Revoked {
        // Refunded while this delivery ran: the item just put must go too.
        take_back(g, &now_is).await?;
    }
    Ok(now_is)
}

/// Revokes a payment (a refund or a chargeback): once, then the same.
async fn revoke(g: &Gateway, provider: &str, id: &str, reason: &str) -> Result<Payment, Refused> {
    let Some(p) = g.world.payment(provider, id).await.map_err(internal)? else {
        return Err(
            ApiError::new(Code::UnknownPayment, format!("no payment `{id}` of `{provider}` was recorded")).into()
        );
    };
    let now = g.clock.now_ms();
    if p.state != PaymentState::Revoked {
        let moved =
            g.world.payment_moved(provider, id, p.state, PaymentState::Revoked, now, reason).await.map_err(internal)?;
        if !moved {
            // Delivered meanwhile: revoke from there.
            g.world
                .payment_moved(provider, id, PaymentState::Delivered, PaymentState::Revoked, now, reason)
                .await
                .map_err(internal)?;
        }
        tracing::info!(%provider, %id, reason, account = %p.account, "payment revoked");
    }
    let p = g.world.payment(provider, id).await.map_err(internal)?.ok_or_else(|| internal("a payment vanished"))?;
    take_back(g, &p).await?;
    g.world.set_flagged(&p.account, true).await.map_err(internal)?;
    Ok(p)
}

/// Undoes a revoked payment's purchase in the inbox: never applied if
/// still unclaimed; else a refund item takes back what it granted.
async fn take_back(g: &Gateway, p: &Payment) -> Result<(), Refused> {
    let (purchase, refund) = item_ids(&p.provider, &p.id);
    let now = g.clock.now_ms();
    match g.world.revoke_inbox(&p.title, &p.player, &purchase, now).await.map_err(internal)? {
        InboxRevoke::Missing | InboxRevoke::Unclaimed => Ok(()),
        InboxRevoke::Claimed => {
            let negate = |m: &std::collections::BTreeMap<String, i64>| m.iter().map(|(k, v)| (k.clone(), -v)).collect();
            let item = InboxItem {
                id: refund,
                title: p.title.clone(),
                player: p.player.clone(),
                kind: "refund".into(),
                from: p.provider.clone(),
                body: json!({ "payment": p.id, "product": p.product, "reason": p.revoked_reason }),
                resources: negate(&p.resources),
                items: negate(&p.items),
                created_ms: now,
                expires_ms: now + PURCHASE_TTL_MS,
                claimed_ms: None,
                revoked_ms: None,
            };
            if g.world.put_inbox(&item, NO_CAP).await.map_err(internal)? == InboxPut::Added {
                crate::relay::inbox_wake_on(&g.bus, &p.title, &p.player).await;
            }
            Ok(())
        }
    }
}

/// Delivers what was recorded and not delivered: at start, then every
/// [`SWEEP_INTERVAL`], until `stop`.
pub fn spawn_sweep(g: Arc<Gateway>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => sweep(&g).await,
            }
        }
    });
}

/// One pass of the sweep.
pub async fn sweep(g: &Gateway) {
    let waiting = match g.world.undelivered(SWEEP_BATCH).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list undelivered payments; the next sweep tries again");
            return;
        }
    };
    for p in waiting {
        let (provider, id) = (p.provider.clone(), p.id.clone());
        match deliver(g, p).await {
            Ok(p) if p.state == PaymentState::Delivered => {
                tracing::info!(%provider, %id, "a payment was delivered late")
            }
            Ok(_) => {}
            Err(Refused(e, _)) => {
                tracing::warn!(%provider, %id, error = %e.message, "delivering a payment failed; the next sweep tries again")
            }
        }
    }
}
