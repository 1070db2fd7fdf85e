//! Roles within an organization, ordered: Viewer < Operator < Editor < Admin < Owner.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A member's (or API key's) role in an organization. Operator: nodes and deployments;
/// Editor: also flows and resources; Admin: also members, keys, identity providers;
/// Owner: also deleting the organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
pub enum Role {
    Viewer,
    Operator,
    Editor,
    Admin,
    Owner,
}

crate::db::text_enum!(Role { Viewer, Operator, Editor, Admin, Owner });

/// Marker types for the least role a handler needs; see `Require`.
pub mod at_least {
    use super::Role;

    pub trait MinimumRole: Send + Sync + 'static {
        const ROLE: Role;
    }

    macro_rules! marker {
        ($($name:ident),*) => {$(
            pub struct $name;
            impl MinimumRole for $name {
                const ROLE: Role = Role::$name;
            }
        )*};
    }
    marker!(Viewer, Operator, Editor, Admin, Owner);
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| format!("unknown role '{s}'"))
    }
}
