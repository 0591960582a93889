//! The state every HTTP and WebSocket handler shares (game and admin
//! routes alike): the server's dependencies, its sessions, token signing,
//! admin authentication and the connections open.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Signer;
use crate::deps::Deps;
use crate::session::Sessions;

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub deps: Arc<Deps>,
    pub sessions: Arc<Sessions>,
    pub signer: Signer,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Open WebSocket connections (axum's graceful shutdown does not wait
    /// for upgraded connections, so we do).
    pub sockets: TaskTracker,
    /// Who may use the admin API and console.
    pub admin: Arc<crate::admin::auth::AdminAuth>,
    /// Connections the server closed itself (timeouts, per-address limit).
    pub closes: Arc<crate::listener::Closes>,
}
