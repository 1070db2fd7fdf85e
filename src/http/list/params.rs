//! The OpenAPI description of a list endpoint's query parameters, built from its `ListSpec`, so
//! the document names exactly the properties, filter types and values `ListQuery::parse` takes.

use utoipa::openapi::{
    Required,
    path::{Parameter, ParameterBuilder, ParameterIn, ParameterStyle},
    schema::{AdditionalProperties, AnyOfBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type},
};

use super::{DEFAULT_LIMIT, FILTER_TYPES, ListSpec, MAX_IN_VALUES, MAX_LIMIT, PropertyType};

/// Declares the documented query parameters of a list endpoint, built from its `ListSpec` (so
/// `orderBy` and the filters name exactly the properties the endpoint takes):
/// `list_params!(pub NodeListParams = LIST_SPEC);`, then `params(NodeListParams)` in its
/// `#[utoipa::path]`.
macro_rules! list_params {
    ($(#[$meta:meta])* $vis:vis $name:ident = $spec:path) => {
        $(#[$meta])*
        $vis struct $name;

        impl utoipa::IntoParams for $name {
            fn into_params(
                _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
            ) -> Vec<utoipa::openapi::path::Parameter> {
                $crate::http::list::parameters(&$spec)
            }
        }
    };
}
pub(crate) use list_params;

/// The paging, ordering and filter parameters of a list endpoint, as `ListQuery::parse` takes
/// them.
pub fn parameters(spec: &ListSpec) -> Vec<Parameter> {
    let integer = |minimum: i64, maximum: Option<i64>| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(minimum))
            .maximum(maximum)
    };
    let names: Vec<&str> = spec.properties.iter().map(|p| p.name).collect();
    vec![
        query_parameter("offset", "Items to skip (default 0).", integer(0, None)),
        query_parameter(
            "limit",
            &format!("Most items to return (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})."),
            integer(1, Some(MAX_LIMIT)),
        ),
        query_parameter(
            "includeCount",
            "Include `totalCount`, the number of items matching the filters.",
            ObjectBuilder::new().schema_type(Type::Boolean),
        ),
        query_parameter(
            "orderBy",
            &format!("Property to sort by (default `{}`).", spec.default_order),
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names)),
        ),
        query_parameter(
            "orderDirection",
            "`asc` or `desc`.",
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["asc", "desc"])),
        ),
        filter_parameter(spec),
    ]
}

/// One optional query parameter with this schema.
pub fn query_parameter(name: &str, description: &str, schema: impl Into<Schema>) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema.into()))
        .build()
}

/// The first filter, `filters[0]`: Crosser's `filters[0].propertyName=...&filters[0].propertyValue=...
/// &filters[0].filterType=...` (OpenAPI's `deepObject` form `filters[0][propertyName]=...` is
/// taken too). Its schema says which filter types and values each property takes.
pub fn filter_parameter(spec: &ListSpec) -> Parameter {
    let description = format!(
        "A filter: `filters[0].propertyName=name&filters[0].propertyValue=x&filters[0].filterType=contains` \
         (also `filters[1]`, ... up to `filters[99]`, ANDed). `filterType` is one of {FILTER_TYPES} \
         (comma-separated values, at most {MAX_IN_VALUES}); default `equal`. `contains` and `startsWith` \
         compare any property as text; the others compare values of the property's type."
    );
    ParameterBuilder::new()
        .name("filters[0]")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .style(Some(ParameterStyle::DeepObject))
        .explode(Some(true))
        .schema(Some(filter_schema(spec)))
        .build()
}

/// One alternative per group of properties of one type, with the filter types and values that
/// type takes, and one for `contains` / `startsWith` on any property.
fn filter_schema(spec: &ListSpec) -> Schema {
    let mut groups: Vec<(PropertyType, Vec<&str>)> = Vec::new();
    for property in spec.properties {
        match groups.iter_mut().find(|(kind, _)| *kind == property.kind) {
            Some((_, names)) => names.push(property.name),
            None => groups.push((property.kind, vec![property.name])),
        }
    }
    let all: Vec<&str> = spec.properties.iter().map(|p| p.name).collect();
    let mut any = AnyOfBuilder::new().item(filter_variant(&all, &["contains", "startsWith"], true, text_value(false)));
    for (kind, names) in &groups {
        let ordered = matches!(kind, PropertyType::Text | PropertyType::Integer | PropertyType::Time);
        let comparisons: &[&str] = if ordered {
            &["equal", "notEqual", "greaterThan", "greaterOrEqual", "lessThan", "lessOrEqual"]
        } else {
            &["equal", "notEqual"]
        };
        any = any.item(filter_variant(names, comparisons, false, single_value(*kind)));
        if let Some(piece) = list_piece(*kind) {
            let pattern = format!("^{piece}(,{piece}){{0,{}}}$", MAX_IN_VALUES - 1);
            any = any.item(filter_variant(
                names,
                &["in"],
                true,
                ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)).into(),
            ));
        }
    }
    any.build().into()
}

fn filter_variant(names: &[&str], filter_types: &[&str], type_required: bool, value: Schema) -> Schema {
    let mut variant = ObjectBuilder::new()
        .property("propertyName", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names.to_vec())))
        .property("filterType", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(filter_types.to_vec())))
        .property("propertyValue", value)
        .required("propertyName")
        .required("propertyValue")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    if type_required {
        variant = variant.required("filterType");
    }
    variant.into()
}

/// Any text without NUL (PostgreSQL text cannot hold it); within an `in` list, without commas.
fn text_value(in_list: bool) -> Schema {
    let pattern = if in_list { r"^[^,\x00]*$" } else { r"^[^\x00]*$" };
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)).into()
}

fn single_value(kind: PropertyType) -> Schema {
    let string = ObjectBuilder::new().schema_type(Type::String);
    match kind {
        PropertyType::Text => text_value(false),
        PropertyType::Uuid => string.format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))).into(),
        PropertyType::Time => string.format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))).into(),
        PropertyType::Integer => string.pattern(Some(format!("^{INTEGER}$"))).into(),
        PropertyType::Boolean => string.enum_values(Some(["true", "false"])).into(),
        PropertyType::Choice(choices) => string.enum_values(Some(choices.to_vec())).into(),
    }
}

/// Digits an `i64` always holds; ASCII only (a `\d` may mean any script's digits).
const INTEGER: &str = "-?[0-9]{1,18}";

/// One value of an `in` list, as a regular expression (times have no practical one: an `in` of
/// times works, undocumented).
fn list_piece(kind: PropertyType) -> Option<String> {
    match kind {
        PropertyType::Text => Some(r"[^,\x00]*".to_owned()),
        PropertyType::Uuid => {
            Some("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}".to_owned())
        }
        PropertyType::Integer => Some(INTEGER.to_owned()),
        PropertyType::Boolean => Some("(true|false)".to_owned()),
        PropertyType::Choice(choices) => Some(format!("({})", choices.join("|"))),
        PropertyType::Time => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{super::tests::SPEC, *};

    #[test]
    fn documented_parameters_follow_the_spec() {
        let documented = serde_json::to_value(parameters(&SPEC)).unwrap();
        let by_name = |name: &str| documented.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone();
        assert_eq!(by_name("orderBy")["schema"]["enum"], serde_json::json!(["name", "createdAt", "id", "level"]));
        assert_eq!(by_name("limit")["schema"]["maximum"], MAX_LIMIT);
        assert_eq!(by_name("filters[0]")["style"], "deepObject");
        // The level's filter takes its choices only.
        let variants = by_name("filters[0]")["schema"]["anyOf"].as_array().unwrap().clone();
        assert!(
            variants
                .iter()
                .any(|v| v["properties"]["propertyValue"]["enum"] == serde_json::json!(["Info", "Warning", "Error"]))
        );
    }
}
