//! A payment request whose every field has been checked: an accepted ISO 4217 currency, an
//! amount in its minor units within the currency's bound, a card token, bounded description and
//! metadata.

use payment_types::{currency::Currency, payment::CreatePayment};
use serde_json::{Map, Value};

// The bounds below are also the OpenAPI document's (`routes::openapi`), so the schema a client
// validates against and the checks here cannot drift apart.

/// Longest `description`, in characters.
pub(crate) const MAX_DESCRIPTION: usize = 500;
/// Longest `source` (card token), in bytes (ASCII only).
pub(crate) const MAX_SOURCE: usize = 64;
/// What a `source` may hold: letters, digits and underscores ([`PaymentRequest::parse`]).
pub(crate) const SOURCE_PATTERN: &str = "^[A-Za-z0-9_]+$";
/// Most keys in `metadata`.
pub(crate) const MAX_METADATA_KEYS: usize = 20;
/// Longest `metadata` key, in characters (at least one).
pub(crate) const MAX_METADATA_KEY: usize = 40;
/// Longest `metadata` value, in characters.
pub(crate) const MAX_METADATA_VALUE: usize = 500;

/// Which field is wrong and why; `code` is stable for clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub(crate) struct ValidationError {
    pub(crate) code: &'static str,
    pub(crate) field: &'static str,
    pub(crate) detail: String,
}

fn invalid(code: &'static str, field: &'static str, detail: impl Into<String>) -> ValidationError {
    ValidationError {
        code,
        field,
        detail: detail.into(),
    }
}

/// A valid payment request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PaymentRequest {
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) source: String,
    pub(crate) description: Option<String>,
    pub(crate) metadata: Option<Map<String, Value>>,
}

impl PaymentRequest {
    pub(crate) fn parse(body: CreatePayment) -> Result<Self, ValidationError> {
        let Some(currency) = Currency::from_code(&body.currency) else {
            return Err(invalid(
                "invalid_currency",
                "currency",
                format!(
                    "currency {:?} is not an active ISO 4217 currency: send an upper-case code such as TRY, EUR, USD, JPY or KWD",
                    truncated(&body.currency)
                ),
            ));
        };
        let max = currency.max_amount();
        if body.amount <= 0 || body.amount > max {
            return Err(invalid(
                "invalid_amount",
                "amount",
                format!(
                    "amount must be an integer number of minor units of {code} between 1 and {max} ({code} has {} decimals: 1999 is {})",
                    currency.exponent(),
                    currency.format(1999),
                    code = currency.code(),
                ),
            ));
        }
        let source_ok = !body.source.is_empty()
            && body.source.len() <= MAX_SOURCE
            && body
                .source
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !source_ok {
            return Err(invalid(
                "invalid_source",
                "source",
                format!("source must be a card token of 1 to {MAX_SOURCE} letters, digits or underscores, e.g. tok_visa"),
            ));
        }
        if body
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
        {
            return Err(invalid(
                "invalid_description",
                "description",
                format!("description must be at most {MAX_DESCRIPTION} characters"),
            ));
        }
        if let Some(metadata) = &body.metadata {
            check_metadata(metadata)?;
        }
        Ok(Self {
            amount: body.amount,
            currency: body.currency,
            source: body.source,
            description: body.description,
            metadata: body.metadata,
        })
    }
}

/// At most 16 characters of a client's value, for an error message.
fn truncated(value: &str) -> String {
    value.chars().take(16).collect()
}

fn check_metadata(metadata: &Map<String, Value>) -> Result<(), ValidationError> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(invalid(
            "invalid_metadata",
            "metadata",
            format!("metadata may hold at most {MAX_METADATA_KEYS} keys"),
        ));
    }
    for (key, value) in metadata {
        let Value::String(value) = value else {
            return Err(invalid(
                "invalid_metadata",
                "metadata",
                format!("metadata value of {key:?} must be a string"),
            ));
        };
        if key.is_empty()
            || key.chars().count() > MAX_METADATA_KEY
            || value.chars().count() > MAX_METADATA_VALUE
        {
            return Err(invalid(
                "invalid_metadata",
                "metadata",
                format!("metadata keys must be 1 to {MAX_METADATA_KEY} characters and values at most {MAX_METADATA_VALUE}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest accepted amount in minor units of any currency: KWD's (three decimals).
    const MAX_AMOUNT: i64 = 100_000_000_000;

    fn body() -> CreatePayment {
        CreatePayment {
            amount: 1999,
            currency: "TRY".into(),
            source: "tok_visa".into(),
            description: None,
            metadata: None,
        }
    }

    #[test]
    fn a_well_formed_request_parses() {
        assert_eq!(PaymentRequest::parse(body()).unwrap().amount, 1999);
    }

    #[test]
    fn amounts_outside_1_to_max_are_refused() {
        for amount in [0, -1, 10_000_000_001, MAX_AMOUNT + 1, i64::MIN] {
            let err = PaymentRequest::parse(CreatePayment { amount, ..body() }).unwrap_err();
            assert_eq!(err.code, "invalid_amount");
        }
        assert!(PaymentRequest::parse(CreatePayment {
            amount: 10_000_000_000,
            ..body()
        })
        .is_ok());
    }

    #[test]
    fn the_amount_bound_follows_the_currency_minor_units() {
        let parse = |currency: &str, amount| {
            PaymentRequest::parse(CreatePayment {
                amount,
                currency: currency.into(),
                ..body()
            })
        };
        assert!(parse("JPY", 100_000_000).is_ok());
        let err = parse("JPY", 100_000_001).unwrap_err();
        assert_eq!(err.code, "invalid_amount");
        assert!(err.detail.contains("0 decimals"), "{}", err.detail);
        assert!(parse("KWD", MAX_AMOUNT).is_ok());
        assert_eq!(
            parse("KWD", MAX_AMOUNT + 1).unwrap_err().code,
            "invalid_amount"
        );
        assert!(parse("EUR", 1).is_ok());
        assert!(parse("USD", 10_000_000_000).is_ok());
    }

    #[test]
    fn currency_must_be_an_active_iso_4217_code() {
        for currency in [
            "try", "TR", "TRYY", "", "T1Y", "ABC", "XTS", "HRK", "BOV", "XAU",
        ] {
            let err = PaymentRequest::parse(CreatePayment {
                currency: currency.into(),
                ..body()
            })
            .unwrap_err();
            assert_eq!(err.code, "invalid_currency", "{currency}");
        }
    }

    #[test]
    fn source_must_be_a_token() {
        for source in ["", "tok visa", "tok-<script>", &"x".repeat(65)] {
            let err = PaymentRequest::parse(CreatePayment {
                source: source.into(),
                ..body()
            })
            .unwrap_err();
            assert_eq!(err.code, "invalid_source");
        }
    }

    #[test]
    fn metadata_is_bounded_and_string_valued() {
        let mut m = Map::new();
        m.insert("n".into(), Value::from(1));
        let err = PaymentRequest::parse(CreatePayment {
            metadata: Some(m),
            ..body()
        })
        .unwrap_err();
        assert_eq!(err.code, "invalid_metadata");
        let many: Map<String, Value> = (0..21)
            .map(|i| (format!("k{i}"), Value::from("v")))
            .collect();
        let err = PaymentRequest::parse(CreatePayment {
            metadata: Some(many),
            ..body()
        })
        .unwrap_err();
        assert_eq!(err.code, "invalid_metadata");
    }
}
