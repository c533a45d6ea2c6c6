//! Names shared by the signalling, media and session layers: session ids and leg roles.

use std::sync::Arc;

/// A session id, `ses_` followed by random characters.
pub type SessionId = Arc<str>;

/// Which side of a secure session a call leg is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LegRole {
    /// The representative leg: the first INVITE on a DNIS.
    Rep,
    /// The customer leg: the second INVITE on a DNIS.
    Customer,
}

impl LegRole {
    pub fn as_str(self) -> &'static str {
        match self {
            LegRole::Rep => "rep",
            LegRole::Customer => "customer",
        }
    }

    pub fn other(self) -> LegRole {
        match self {
            LegRole::Rep => LegRole::Customer,
            LegRole::Customer => LegRole::Rep,
        }
    }
}

impl std::fmt::Display for LegRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
