//! The first Owner: on a start with no user in the database, create one (and an organization),
//! from `EDGEFLOW_ADMIN_EMAIL` / `EDGEFLOW_ADMIN_PASSWORD`, or with a generated password printed once.

use crate::{
    auth::{password::check_password_rules, roles::Role, tokens::random_secret},
    events::{
        model::{Level, Source},
        store::NewEvent,
    },
    organizations::store as org_store,
    state::AppState,
    users::store as user_store,
};

const DEFAULT_ADMIN_EMAIL: &str = "admin@edgeflow.local";
/// Serializes bootstrap across replicas starting at once.
const BOOTSTRAP_LOCK: i64 = 0x6564_6765_666c_6f77;

pub async fn ensure_first_owner(state: &AppState) -> anyhow::Result<()> {
    let config = &state.config;
    let mut tx = state.db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(BOOTSTRAP_LOCK).execute(&mut *tx).await?;
    if user_store::count(&mut tx).await? > 0 {
        tracing::info!("sign in with POST /api/authentication/login {{\"email\", \"password\"}}");
        return Ok(());
    }
    let email = config.admin_email.clone().unwrap_or_else(|| DEFAULT_ADMIN_EMAIL.to_owned());
    let (password, generated) = match &config.admin_password {
        Some(password) => {
            check_password_rules("EDGEFLOW_ADMIN_PASSWORD", password)
                .map_err(|err| anyhow::anyhow!("EDGEFLOW_ADMIN_PASSWORD: {err}"))?;
            (password.clone(), false)
        }
        None => (random_secret(18), true),
    };
    let hash = state.passwords.hash(password.clone()).await?;
    let user_id = user_store::insert(&mut tx, &email, "Administrator", &hash)
        .await
        .map_err(|err| anyhow::anyhow!("creating the first user: {err}"))?;
    let organization = org_store::insert(&mut tx, "Default", None).await?;
    org_store::add_member(&mut tx, organization.id, user_id, Role::Owner).await?;
    let mut event = NewEvent::new(
        Some(organization.id),
        Level::Info,
        Source::ControlCenter,
        "user.bootstrap",
        format!("User: {email}"),
        format!("created the first Owner {email} and organization Default"),
    );
    event.user_id = Some(user_id);
    event.record(&mut tx).await?;
    tx.commit().await?;
    if generated {
        // Printed, not logged, and only this once: the password is nowhere else.
        println!(
            "\nEdgeFlow: created the first Owner. Sign in with\n  email:    {email}\n  password: {password}\n\
             (shown only now; change it with POST /api/users/me/password)\n"
        );
    } else {
        tracing::info!(%email, "created the first Owner from EDGEFLOW_ADMIN_EMAIL / EDGEFLOW_ADMIN_PASSWORD");
    }
    Ok(())
}
