//! Authentication: who the caller is.

use std::sync::Arc;

/// The kind of principal a request is made by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// `AgentCore::OAuthUser`, proved by a JWT.
    OAuthUser,
    /// `AgentCore::UnauthenticatedUser`, when authentication is explicitly off.
    Unauthenticated,
}

/// Who the caller is, as proved by its token (or anonymous when authentication is off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The principal type.
    pub kind: PrincipalKind,
    /// The JWT `sub` ("anonymous" when unauthenticated).
    pub subject: String,
    /// Every other claim, as a string, sorted by key.
    pub tags: Vec<(String, String)>,
    /// `exp`, in seconds since the epoch.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// The anonymous identity used when authentication is off.
    #[must_use]
    pub fn anonymous() -> Arc<Self> {
        Arc::new(Self {
            kind: PrincipalKind::Unauthenticated,
            subject: "anonymous".to_owned(),
            tags: Vec::new(),
            expires_at: None,
        })
    }
}
