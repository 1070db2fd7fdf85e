//! Field checks shared by request bodies. Each collects `FieldError`s so one answer names every
//! problem at once.

use crate::error::{ApiError, FieldError};

pub const DESCRIPTION_MAX: usize = 2000;
pub const EMAIL_MAX: usize = 254;

/// Whether a JSON value holds a NUL character in a string or key (what `JsonDocument` refuses).
pub fn json_has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_has_nul),
        serde_json::Value::Object(fields) => fields.iter().any(|(key, item)| key.contains('\0') || json_has_nul(item)),
        _ => false,
    }
}

/// A trimmed description, with an empty one meaning none.
pub fn clean_description(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

#[derive(Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// A required one-line text (stored trimmed): not blank, at most `max` characters, no control
    /// characters. `one_line_text` documents the same rule.
    pub fn text(&mut self, field: &str, value: &str, max: usize) {
        if value.trim().is_empty() {
            self.fail(field, "must not be empty");
        } else if value.chars().count() > max {
            self.fail(field, format!("must be at most {max} characters"));
        } else if value.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters");
        }
    }

    /// An email address (stored trimmed): `local@domain`, one `@`, no spaces or control
    /// characters, at most `EMAIL_MAX` characters. `Email` documents the same rule.
    pub fn email(&mut self, field: &str, value: &str) {
        let trimmed = value.trim();
        let valid = value.chars().count() <= EMAIL_MAX
            && !trimmed.chars().any(|c| c.is_whitespace() || c.is_control())
            && trimmed
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
        if !valid {
            self.fail(field, "must be an email address");
        }
    }

    /// A free text of several lines: at most `DESCRIPTION_MAX` characters, no control characters
    /// but line breaks and tabs. `Description` documents the same rule.
    pub fn description(&mut self, field: &str, value: &str) {
        if value.chars().count() > DESCRIPTION_MAX {
            self.fail(field, format!("must be at most {DESCRIPTION_MAX} characters"));
        } else if value.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
            self.fail(field, "must not contain control characters");
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() { Ok(()) } else { Err(ApiError::validation(self.0)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_ok(value: &str, max: usize) -> bool {
        let mut checks = Checks::new();
        checks.text("name", value, max);
        checks.finish().is_ok()
    }

    #[test]
    fn texts_count_as_sent_and_refuse_control_characters_anywhere() {
        assert!(text_ok(" Line 3 ", 8));
        assert!(!text_ok(" Line 3  ", 8));
        assert!(!text_ok("   ", 8));
        assert!(!text_ok("\tLine", 8));
    }

    #[test]
    fn nul_is_found_in_keys_and_nested_strings() {
        assert!(!json_has_nul(&serde_json::json!({"a": ["b", {"c": 1}]})));
        assert!(json_has_nul(&serde_json::json!({"a": ["b", {"c": "x\u{0}"}]})));
        assert!(json_has_nul(&serde_json::json!({"a\u{0}": 1})));
    }
}
