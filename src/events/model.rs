use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Level {
    Info,
    Warning,
    Error,
}
crate::db::text_enum!(Level { Info, Warning, Error });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Source {
    ControlCenter,
    Node,
    Flow,
}
crate::db::text_enum!(Source { ControlCenter, Node, Flow });
