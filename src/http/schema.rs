//! Schemas of the request fields our checks validate (documentation only): each says in JSON
//! Schema what its check in `validate` accepts, so the OpenAPI document is as strict as the
//! server and no stricter (`scripts/contract-fuzz` holds them to it).

use std::borrow::Cow;

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{ObjectBuilder, Schema, Type},
    },
};

use super::validate::{DESCRIPTION_MAX, EMAIL_MAX};

/// Control characters (Unicode's Cc: C0, DEL and C1), as `char::is_control` finds them, for
/// patterns (ECMA-262, as JSON Schema reads them).
const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";
/// What `char::is_whitespace` (and so `trim`) takes beyond the control characters.
const SPACE: &str = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// Whitespace that is also a control character.
const CONTROL_SPACE: &str = r"\t\n\x0b\x0c\r\x85";

/// The schema of a text `Checks::text(field, value, max)` accepts.
pub fn one_line_text(max: usize) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(format!("^[^{CONTROL}]*[^{CONTROL}{SPACE}][^{CONTROL}]*$")))
        .description(Some(format!("1 to {max} characters, not blank, no control characters.")))
        .into()
}

/// The schema of a one-line text that must not start or end with whitespace either (a flow's
/// module ids and types): 1 to `max` characters, no control characters.
pub fn exact_text(max: usize) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(format!("^[^{CONTROL}{SPACE}]([^{CONTROL}]*[^{CONTROL}{SPACE}])?$")))
        .into()
}

/// Declares a schema-only type for the fields checked with `Checks::text(_, _, $max)`, for
/// `#[schema(value_type = ...)]`: `text_schema!(pub NodeName, NAME_MAX);`.
macro_rules! text_schema {
    ($(#[$meta:meta])* $vis:vis $name:ident, $max:expr) => {
        $(#[$meta])*
        $vis struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::http::schema::one_line_text($max).into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }
    };
}
pub(crate) use text_schema;

/// What `Checks::description` accepts (documentation only).
pub struct Description;

impl PartialSchema for Description {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(DESCRIPTION_MAX))
            .pattern(Some(r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"))
            .description(Some(format!(
                "At most {DESCRIPTION_MAX} characters; line breaks and tabs, no other control characters."
            )))
            .into()
    }
}

impl ToSchema for Description {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Description")
    }
}

/// What `Checks::email` accepts (documentation only).
pub struct Email;

impl PartialSchema for Email {
    fn schema() -> RefOr<Schema> {
        let part = format!("[^@{CONTROL}{SPACE}]+");
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(EMAIL_MAX))
            .pattern(Some(format!("^[{CONTROL_SPACE}{SPACE}]*{part}@{part}[{CONTROL_SPACE}{SPACE}]*$")))
            .examples(["demo@example.com"])
            .into()
    }
}

impl ToSchema for Email {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Email")
    }
}

/// A free-form JSON object as PostgreSQL stores it (documentation only): any JSON, but no NUL
/// character in any string or key (`jsonb` cannot hold one; such a body is a 400).
pub struct JsonDocument;

impl PartialSchema for JsonDocument {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some(NO_NUL))))
            .additional_properties(Some(utoipa::openapi::Ref::from_schema_name("JsonValue")))
            .into()
    }
}

impl ToSchema for JsonDocument {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("JsonDocument")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        let value = utoipa::openapi::schema::AnyOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::Array(vec![
                Type::Null,
                Type::Boolean,
                Type::Number,
            ])))
            .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some(NO_NUL)))
            .item(
                utoipa::openapi::schema::ArrayBuilder::new().items(utoipa::openapi::Ref::from_schema_name("JsonValue")),
            )
            .item(utoipa::openapi::Ref::from_schema_name("JsonDocument"))
            .description(Some("Any JSON value without NUL characters in its strings."))
            .build();
        schemas.push(("JsonValue".to_owned(), RefOr::T(Schema::AnyOf(value))));
        schemas.push(("JsonDocument".to_owned(), Self::schema()));
    }
}

const NO_NUL: &str = r"^[^\x00]*$";
