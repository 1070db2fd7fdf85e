//! Writing events. Audit rows are written in the same transaction as the change they describe,
//! so an action and its record commit (or vanish) together.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::model::{Level, Source};
use crate::auth::context::AuthContext;

/// An event to record. Build it with `audit` (an API action) or `new`, then add ids and data.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub organization_id: Option<Uuid>,
    pub level: Level,
    pub source: Source,
    /// What happened, dotted: `organization.update`, `auth.login_failed`, `node.connected`.
    pub action: &'static str,
    /// What it happened to: `User: demo@example.com`, `Node: Production5`, `Flow: Temperature`.
    pub subject: String,
    pub message: String,
    pub node_id: Option<Uuid>,
    pub flow_definition_id: Option<Uuid>,
    pub deployment_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub client_ip: Option<String>,
    pub data: Option<Value>,
}

impl NewEvent {
    pub fn new(
        organization_id: Option<Uuid>,
        level: Level,
        source: Source,
        action: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            organization_id,
            level,
            source,
            action,
            subject: subject.into(),
            message: message.into(),
            node_id: None,
            flow_definition_id: None,
            deployment_id: None,
            user_id: None,
            api_key_id: None,
            client_ip: None,
            data: None,
        }
    }

    /// An API action by the caller in its active organization: who, from where, what.
    pub fn audit(
        auth: &AuthContext,
        action: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let mut event = Self::new(
            Some(auth.organization_id),
            Level::Info,
            Source::ControlCenter,
            action,
            subject,
            message,
        );
        event.user_id = auth.user_id();
        event.api_key_id = auth.api_key_id();
        event.client_ip = auth.client_ip.map(|ip| ip.to_string());
        event
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn with_level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    pub async fn record(&self, conn: &mut PgConnection) -> Result<Uuid, sqlx::Error> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO events (id, organization_id, level, source, action, subject, message, \
             node_id, flow_definition_id, deployment_id, user_id, api_key_id, client_ip, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(id)
        .bind(self.organization_id)
        .bind(self.level)
        .bind(self.source)
        .bind(self.action)
        .bind(&self.subject)
        .bind(&self.message)
        .bind(self.node_id)
        .bind(self.flow_definition_id)
        .bind(self.deployment_id)
        .bind(self.user_id)
        .bind(self.api_key_id)
        .bind(&self.client_ip)
        .bind(&self.data)
        .execute(conn)
        .await?;
        Ok(id)
    }
}
