//! Who may use the admin port. Health and readiness are open. Everything else needs the
//! bearer token when one is configured (`Authorization: Bearer <token>`, compared in
//! constant time); without a token it is served only on a loopback address, and binding an
//! admin port elsewhere without one is refused — never open to the network without
//! credentials.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::AdminState;

/// The admin bearer token (never logged: `Debug` shows its length only).
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    /// A token of at least 16 bytes (a shorter one is refused: it could be guessed).
    pub fn new(token: &str) -> Result<Token, AccessError> {
        let token = token.trim();
        if token.len() < 16 {
            return Err(AccessError::ShortToken);
        }
        Ok(Token(Arc::from(token)))
    }

    fn matches(&self, presented: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.0.as_bytes(), presented.as_bytes())
            .is_ok()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({} bytes)", self.0.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "admin port {0} is not a loopback address: it needs a token (--admin-token-file), \
         or bind it to 127.0.0.1 / [::1]"
    )]
    OpenToNetwork(SocketAddr),
    #[error("the admin token must be at least 16 bytes")]
    ShortToken,
}

/// An admin port on `addr` may start: loopback, or a token is set.
pub fn check_binding(addr: SocketAddr, token: Option<&Token>) -> Result<(), AccessError> {
    if addr.ip().is_loopback() || token.is_some() {
        Ok(())
    } else {
        Err(AccessError::OpenToNetwork(addr))
    }
}

/// `routes` behind the token (when one is set) on the server bound to `addr`.
pub fn guarded(
    routes: Router<AdminState>,
    state: &AdminState,
    addr: SocketAddr,
) -> Router<AdminState> {
    if state.token.is_none() && addr.ip().is_loopback() {
        return routes;
    }
    routes.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        require_token,
    ))
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let allowed = match (&state.token, presented) {
        (Some(token), Some(presented)) => token.matches(presented),
        _ => false,
    };
    if allowed {
        return next.run(request).await;
    }
    let challenge = [(header::WWW_AUTHENTICATE, "Bearer realm=\"edgemq\"")];
    (
        StatusCode::UNAUTHORIZED,
        challenge,
        "a bearer token is required\n",
    )
        .into_response()
}
