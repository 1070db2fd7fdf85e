//! Request and answer bodies of `/api/organizations`: organizations, members and identity
//! providers. Row types live in `store`; these are what clients see and send.

use serde::{Deserialize, Serialize};
use utoipa::{
    ToSchema,
    openapi::{
        RefOr,
        schema::{ArrayBuilder, ObjectBuilder, Schema, Type},
    },
};
use uuid::Uuid;

use super::store::{IdentityProviderRow, MemberRow, OrganizationSummaryRow};
use crate::{
    auth::roles::Role,
    error::ApiError,
    http::{
        merge_patch::Patch,
        schema::{Description, Email, text_schema},
        time::Timestamp,
        validate::Checks,
    },
};

/// An organization, with the caller's role in it and cheap counts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    pub id: Uuid,
    #[schema(example = "Acme Manufacturing")]
    pub name: String,
    pub description: Option<String>,
    /// The caller's role in this organization.
    pub role: Role,
    pub member_count: i64,
    pub identity_provider_count: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<OrganizationSummaryRow> for Organization {
    fn from(row: OrganizationSummaryRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            description: row.description,
            role: row.role,
            member_count: row.member_count,
            identity_provider_count: row.identity_provider_count,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewOrganization {
    /// 1 to 200 characters.
    #[schema(value_type = OrganizationName, example = "Acme Manufacturing")]
    pub name: String,
    /// At most 2000 characters.
    #[serde(default)]
    #[schema(value_type = Option<Description>)]
    pub description: Option<String>,
}

/// Merge patch of an organization: absent fields stay as they are; `description: null` clears it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrganizationPatch {
    /// Cannot be cleared.
    #[serde(default)]
    #[schema(value_type = OrganizationName)]
    pub name: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<Description>)]
    pub description: Patch<String>,
}

/// A member of an organization.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub user_id: Uuid,
    #[schema(example = "demo@example.com")]
    pub email: String,
    pub name: String,
    pub role: Role,
    /// When the user joined the organization.
    pub created_at: Timestamp,
}

impl From<MemberRow> for Member {
    fn from(row: MemberRow) -> Self {
        Self {
            user_id: row.user_id,
            email: row.email,
            name: row.name,
            role: row.role,
            created_at: row.created_at.into(),
        }
    }
}

/// An existing user to add to the organization.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMember {
    /// The email the user signed up with.
    #[schema(value_type = Email)]
    pub email: String,
    /// At most the caller's own role.
    pub role: Role,
}

/// Merge patch of a membership.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberPatch {
    /// The new role: at most the caller's own. Cannot be cleared.
    #[serde(default)]
    #[schema(value_type = Role)]
    pub role: Patch<Role>,
}

/// OpenID Connect settings with which members of the organization sign in. The client secret is
/// stored encrypted and never returned; `hasClientSecret` tells whether one is set.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityProvider {
    pub id: Uuid,
    #[schema(example = "Microsoft Entra ID")]
    pub name: String,
    #[schema(example = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0")]
    pub issuer_url: String,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    pub enabled: bool,
    pub has_client_secret: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<IdentityProviderRow> for IdentityProvider {
    fn from(row: IdentityProviderRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            issuer_url: row.issuer_url,
            client_id: row.client_id,
            scopes: row.scopes,
            enabled: row.enabled,
            has_client_secret: row.has_client_secret,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        }
    }
}

/// No `Debug`: it holds a client secret.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewIdentityProvider {
    /// 1 to 200 characters, unique in the organization.
    #[schema(value_type = IdentityProviderName)]
    pub name: String,
    /// The OpenID Connect issuer: an `https://` URL without query or fragment.
    #[schema(value_type = IssuerUrl)]
    pub issuer_url: String,
    #[serde(default)]
    #[schema(value_type = Option<ClientId>)]
    pub client_id: Option<String>,
    /// Stored encrypted; never returned. Can also be set later with `PUT .../secrets`.
    #[serde(default)]
    #[schema(value_type = Option<ClientSecret>)]
    pub client_secret: Option<String>,
    /// Default `openid`, `email`, `profile`; must include `openid`.
    #[serde(default)]
    #[schema(value_type = Option<Scopes>)]
    pub scopes: Option<Vec<String>>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Merge patch of an identity provider. `clientId: null` clears it; `scopes: null` restores the
/// default scopes. The secret is changed with `PUT .../secrets`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityProviderPatch {
    /// Cannot be cleared.
    #[serde(default)]
    #[schema(value_type = IdentityProviderName)]
    pub name: Patch<String>,
    /// Cannot be cleared.
    #[serde(default)]
    #[schema(value_type = IssuerUrl)]
    pub issuer_url: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<ClientId>)]
    pub client_id: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<Scopes>)]
    pub scopes: Patch<Vec<String>>,
    /// Cannot be cleared.
    #[serde(default)]
    #[schema(value_type = bool)]
    pub enabled: Patch<bool>,
}

/// New client credentials of the identity provider's client application. No `Debug`: it holds a
/// client secret.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityProviderSecrets {
    #[schema(value_type = ClientId, example = "343f96ea-0000-0000-0000-000000000000")]
    pub client_id: String,
    #[schema(value_type = ClientSecret)]
    pub client_secret: String,
}

// ----- Validation -----

pub const NAME_MAX: usize = 200;
pub use crate::http::validate::DESCRIPTION_MAX;
const CLIENT_ID_MAX: usize = 500;
const CLIENT_SECRET_MAX: usize = 4096;
const ISSUER_URL_MAX: usize = 2000;
const SCOPES_MAX: usize = 50;
const SCOPE_MAX: usize = 200;

text_schema!(
    /// An organization's name.
    pub OrganizationName,
    NAME_MAX
);
text_schema!(
    /// An identity provider's name.
    pub IdentityProviderName,
    NAME_MAX
);
text_schema!(
    /// An identity provider's client id.
    pub ClientId,
    CLIENT_ID_MAX
);
text_schema!(
    /// An identity provider's client secret.
    pub ClientSecret,
    CLIENT_SECRET_MAX
);

/// What `check_issuer_url` accepts (documentation only).
pub struct IssuerUrl;

impl utoipa::PartialSchema for IssuerUrl {
    fn schema() -> RefOr<Schema> {
        // Whitespace around it is trimmed; inside, none (nor control characters).
        let around = r"[\t\n\x0b\x0c\r\x85 \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*";
        let label = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
        // An IPv6 address in hex groups, `::` standing for one or more groups of zeros.
        let group = "[0-9A-Fa-f]{1,4}";
        let ipv6 = [
            format!("({group}:){{7}}{group}"),
            format!("({group}:){{1,7}}:"),
            format!("({group}:){{1,6}}:{group}"),
            format!("({group}:){{1,5}}(:{group}){{1,2}}"),
            format!("({group}:){{1,4}}(:{group}){{1,3}}"),
            format!("({group}:){{1,3}}(:{group}){{1,4}}"),
            format!("({group}:){{1,2}}(:{group}){{1,5}}"),
            format!("{group}:(:{group}){{1,6}}"),
            format!(":((:{group}){{1,7}}|:)"),
        ]
        .join("|");
        let port = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";
        let path = r"[^?#\s\x00-\x1f\x7f-\x9f]*";
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(ISSUER_URL_MAX))
            .pattern(Some(format!(
                "^{around}[Hh][Tt][Tt][Pp][Ss]://({label}(\\.{label})*|\\[({ipv6})\\])(:{port})?(/{path})?{around}$"
            )))
            .examples(["https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0"])
            .into()
    }
}

impl utoipa::ToSchema for IssuerUrl {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("IssuerUrl")
    }
}

/// What `check_scopes` accepts (documentation only).
pub struct Scopes;

impl utoipa::PartialSchema for Scopes {
    fn schema() -> RefOr<Schema> {
        // RFC 6749 scope tokens: printable ASCII but space, `"` and `\`.
        let token = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!(r"^[\x21\x23-\x5b\x5d-\x7e]{{1,{SCOPE_MAX}}}$")));
        let mut scopes = ArrayBuilder::new()
            .items(token)
            .min_items(Some(1))
            .max_items(Some(SCOPES_MAX))
            .unique_items(true)
            .examples([serde_json::json!(["openid", "email", "profile"])])
            .build();
        // utoipa's model has no `contains`; extensions serialize as they are named.
        scopes.extensions = Some([("contains", serde_json::json!({"const": "openid"}))].into_iter().collect());
        Schema::Array(scopes).into()
    }
}

impl utoipa::ToSchema for Scopes {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Scopes")
    }
}

/// The scopes a new identity provider asks for unless told otherwise.
pub fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

pub use crate::http::validate::clean_description;

impl NewOrganization {
    pub fn check(&self) -> Result<(), ApiError> {
        let mut checks = Checks::new();
        checks.text("name", &self.name, NAME_MAX);
        if let Some(description) = &self.description {
            checks.description("description", description);
        }
        checks.finish()
    }
}

/// An OpenID Connect issuer: `https://host[:port][/path]`, no credentials, query or fragment.
pub fn check_issuer_url(checks: &mut Checks, field: &str, value: &str) {
    let problem = if value.chars().count() > ISSUER_URL_MAX {
        Some(format!("must be at most {ISSUER_URL_MAX} characters"))
    } else {
        issuer_problem(value.trim())
    };
    if let Some(problem) = problem {
        checks.fail(field, problem);
    }
}

fn issuer_problem(value: &str) -> Option<String> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain spaces or control characters".to_owned());
    }
    match value.get(..8).filter(|scheme| scheme.eq_ignore_ascii_case("https://")) {
        None => Some("must be an https:// URL".to_owned()),
        Some(_) => issuer_remainder_problem(&value[8..]),
    }
}

fn issuer_remainder_problem(rest: &str) -> Option<String> {
    if rest.contains('?') || rest.contains('#') {
        return Some("must not have a query or fragment".into());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Some("must not contain credentials".into());
    }
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: [::1]:8443
        Some(inner) => match inner.split_once(']') {
            // Hex groups only (no embedded IPv4), and a real IPv6 address.
            Some((host, after))
                if host.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
                    && host.parse::<std::net::Ipv6Addr>().is_ok() =>
            {
                match after {
                    "" => (host, None),
                    _ => match after.strip_prefix(':') {
                        Some(port) => (host, Some(port)),
                        None => return Some("must name a valid host".into()),
                    },
                }
            }
            _ => return Some("must name a valid host".into()),
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && (authority.starts_with('[')
            || host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }));
    if !host_ok {
        return Some("must name a valid host".into());
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Some("must have a port from 1 to 65535".into());
    }
    None
}

/// OAuth scopes (RFC 6749 scope tokens): 1 to 50, distinct, `openid` among them.
pub fn check_scopes(checks: &mut Checks, field: &str, scopes: &[String]) {
    if scopes.is_empty() || scopes.len() > SCOPES_MAX {
        checks.fail(field, format!("must list 1 to {SCOPES_MAX} scopes"));
        return;
    }
    for (i, scope) in scopes.iter().enumerate() {
        let valid = !scope.is_empty()
            && scope.len() <= SCOPE_MAX
            && scope.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
        if !valid {
            checks.fail(
                &format!("{field}[{i}]"),
                "must be a scope token: printable ASCII without spaces, quotes or backslashes",
            );
        } else if scopes[..i].contains(scope) {
            checks.fail(&format!("{field}[{i}]"), format!("repeats the scope '{scope}'"));
        }
    }
    if !scopes.iter().any(|s| s == "openid") {
        checks.fail(field, "must include openid");
    }
}

pub fn check_client_id(checks: &mut Checks, field: &str, value: &str) {
    checks.text(field, value, CLIENT_ID_MAX);
}

pub fn check_client_secret(checks: &mut Checks, field: &str, value: &str) {
    checks.text(field, value, CLIENT_SECRET_MAX);
}

impl NewIdentityProvider {
    pub fn check(&self) -> Result<(), ApiError> {
        let mut checks = Checks::new();
        checks.text("name", &self.name, NAME_MAX);
        check_issuer_url(&mut checks, "issuerUrl", &self.issuer_url);
        if let Some(client_id) = &self.client_id {
            check_client_id(&mut checks, "clientId", client_id);
        }
        if let Some(secret) = &self.client_secret {
            check_client_secret(&mut checks, "clientSecret", secret);
        }
        if let Some(scopes) = &self.scopes {
            check_scopes(&mut checks, "scopes", scopes);
        }
        checks.finish()
    }
}

impl IdentityProviderSecrets {
    pub fn check(&self) -> Result<(), ApiError> {
        let mut checks = Checks::new();
        check_client_id(&mut checks, "clientId", &self.client_id);
        check_client_secret(&mut checks, "clientSecret", &self.client_secret);
        checks.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer_ok(url: &str) -> bool {
        let mut checks = Checks::new();
        check_issuer_url(&mut checks, "issuerUrl", url);
        checks.finish().is_ok()
    }

    #[test]
    fn issuer_urls_must_be_https_hosts_without_query() {
        for good in [
            "https://login.microsoftonline.com/0000/v2.0",
            "https://accounts.google.com",
            "HTTPS://idp.example.com:8443/realms/x/",
            "https://[::1]:8443/auth",
        ] {
            assert!(issuer_ok(good), "{good}");
        }
        for bad in [
            "http://idp.example.com",
            "idp.example.com",
            "https://",
            "https:///path",
            "https://user:pw@idp.example.com",
            "https://idp.example.com?x=1",
            "https://idp.example.com/#frag",
            "https://idp example.com",
            "https://idp.example.com:0",
            "https://idp.example.com:99999",
            "https://-bad-.example.com",
            "https://a..b",
            "ftp://idp.example.com",
            "https://[9C:ecE50]/x",
            "https://[::ffff:1.2.3.4]/x",
        ] {
            assert!(!issuer_ok(bad), "{bad}");
        }
    }

    #[test]
    fn scopes_need_openid_and_no_repeats() {
        let check = |scopes: &[&str]| {
            let mut checks = Checks::new();
            check_scopes(&mut checks, "scopes", &scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            checks.finish().is_ok()
        };
        assert!(check(&["openid", "email"]));
        assert!(!check(&[]));
        assert!(!check(&["email"]));
        assert!(!check(&["openid", "openid"]));
        assert!(!check(&["openid", "has space"]));
        assert!(check(&default_scopes().iter().map(String::as_str).collect::<Vec<_>>()));
    }
}
