//! Field rules for accounts. Each returns the normalised value or the field's error.

use auth_claims::Role;
use http_api::text;
use service_kit::FieldError;

/// An address as the document's `email` pattern describes it (see [`http_api::text`]),
/// lower-cased.
pub fn email(raw: &str) -> Result<String, FieldError> {
    if text::is_email(raw) {
        Ok(raw.to_lowercase())
    } else {
        Err(FieldError::new("email", "must be an email address"))
    }
}

/// 8 to 128 characters (the upper bound keeps hashing cost bounded).
pub fn password(raw: &str) -> Result<(), FieldError> {
    match raw.chars().count() {
        0..8 => Err(FieldError::new("password", "must be at least 8 characters")),
        8..=128 => Ok(()),
        _ => Err(FieldError::new(
            "password",
            "must be at most 128 characters",
        )),
    }
}

/// 1 to 32 characters of visible text, stored trimmed.
pub fn nickname(raw: &str) -> Result<String, FieldError> {
    if text::is_visible_text(raw, 32) {
        Ok(raw.trim().to_owned())
    } else {
        Err(FieldError::new(
            "nickname",
            "must be 1 to 32 characters, not all blank, without control characters",
        ))
    }
}

/// A non-empty set of assignable roles, sorted and without repeats.
pub fn roles(mut roles: Vec<Role>) -> Result<Vec<Role>, FieldError> {
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err(FieldError::new("roles", "at least one role is needed"));
    }
    if roles.iter().any(|r| !Role::ASSIGNABLE.contains(r)) {
        return Err(FieldError::new(
            "roles",
            "only USER, OPERATOR, AUDITOR and ADMIN can be given",
        ));
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(email("Alice@Example.COM").unwrap(), "alice@example.com");
        for bad in [
            " alice@example.com",
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "a b@x.io",
            "a@b@c.io",
            "a@.io",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_need_eight_characters() {
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
        assert!(
            password("ééééééé").is_err(),
            "counted in characters, not bytes"
        );
        assert!(password(&"x".repeat(129)).is_err());
    }

    #[test]
    fn system_cannot_be_given_and_roles_cannot_be_empty() {
        assert!(roles(vec![]).is_err());
        assert!(roles(vec![Role::User, Role::System]).is_err());
        assert_eq!(
            roles(vec![Role::Admin, Role::User, Role::Admin]).unwrap(),
            vec![Role::User, Role::Admin]
        );
    }
}
