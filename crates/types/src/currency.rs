//! ISO 4217 currencies that a payment may be made in, with their minor units.
//!
//! The list comes from the `iso_currency` crate (ISO 4217's own table), never from a table typed
//! here. A code is **accepted** when ISO 4217 lists it as a current currency with a minor unit:
//! superseded codes (`HRK`), funds (`BOV`, `CLF`), and special codes without a minor unit (metals
//! such as `XAU`, `XDR`, the testing code `XTS`, `XXX`) are refused, as a card acquirer would.
//!
//! Amounts are integers of minor units, so each currency's exponent matters: 1999 is 19.99 TRY,
//! 1999 JPY (no minor unit), and 1.999 KWD (three decimals). The upper bound on an amount is the
//! same in major units for every currency ([`MAX_MAJOR_UNITS`]), so it is 10^10 minor units for a
//! two-decimal currency, 10^8 for JPY and 10^11 for KWD.

use iso_currency::{Currency as Iso, IntoEnumIterator};

/// The largest amount in major units (a sanity bound, not a business limit): 100 million.
pub const MAX_MAJOR_UNITS: i64 = 100_000_000;

/// An accepted currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency(Iso);

impl Currency {
    /// The accepted currency with this (upper-case) alphabetic code, if any.
    pub fn from_code(code: &str) -> Option<Self> {
        let iso = Iso::from_code(code)?;
        let accepted = iso.is_superseded().is_none()
            && !iso.is_fund()
            && !iso.is_special()
            && iso.exponent().is_some();
        accepted.then_some(Self(iso))
    }

    /// The alphabetic code, e.g. `TRY`.
    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point of the major unit: 2 for TRY, 0 for JPY, 3 for KWD.
    pub fn exponent(self) -> u32 {
        u32::from(self.0.exponent().unwrap_or(0))
    }

    /// The largest amount, in minor units, that may be charged in this currency.
    pub fn max_amount(self) -> i64 {
        MAX_MAJOR_UNITS * 10_i64.pow(self.exponent())
    }

    /// `amount` minor units written in major units with the currency's decimals and its code:
    /// `1999` TRY is `19.99 TRY`, JPY `1999 JPY`, KWD `1.999 KWD`.
    pub fn format(self, amount: i64) -> String {
        let exponent = self.exponent();
        if exponent == 0 {
            return format!("{amount} {}", self.code());
        }
        let scale = 10_i64.pow(exponent);
        let sign = if amount < 0 { "-" } else { "" };
        let (major, minor) = (
            amount.unsigned_abs() / scale as u64,
            amount.unsigned_abs() % scale as u64,
        );
        format!(
            "{sign}{major}.{minor:0width$} {}",
            self.code(),
            width = exponent as usize
        )
    }

    /// Every accepted currency, in code order (for documents such as the OpenAPI enum).
    pub fn all() -> Vec<Self> {
        let mut all: Vec<Self> = Iso::iter()
            .filter_map(|iso| Self::from_code(iso.code()))
            .collect();
        all.sort_by_key(|c| c.code());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_currencies_are_accepted_with_their_exponents() {
        for (code, exponent) in [("TRY", 2), ("EUR", 2), ("USD", 2), ("JPY", 0), ("KWD", 3)] {
            let currency = Currency::from_code(code).unwrap_or_else(|| panic!("{code}"));
            assert_eq!(currency.exponent(), exponent, "{code}");
            assert_eq!(currency.code(), code);
        }
    }

    #[test]
    fn made_up_superseded_fund_and_special_codes_are_refused() {
        for code in [
            "ABC", "ZZZ", "try", "TRYX", "", "HRK", "BOV", "CLF", "XAU", "XTS", "XXX", "XDR",
        ] {
            assert!(Currency::from_code(code).is_none(), "{code}");
        }
    }

    #[test]
    fn the_bound_is_the_same_in_major_units() {
        let bound = |code| Currency::from_code(code).unwrap().max_amount();
        assert_eq!(bound("TRY"), 10_000_000_000);
        assert_eq!(bound("JPY"), 100_000_000);
        assert_eq!(bound("KWD"), 100_000_000_000);
    }

    #[test]
    fn amounts_are_written_with_the_currency_decimals() {
        let format = |code, amount| Currency::from_code(code).unwrap().format(amount);
        assert_eq!(format("TRY", 1999), "19.99 TRY");
        assert_eq!(format("TRY", 5), "0.05 TRY");
        assert_eq!(format("JPY", 1999), "1999 JPY");
        assert_eq!(format("KWD", 1999), "1.999 KWD");
        assert_eq!(format("KWD", 1), "0.001 KWD");
        assert_eq!(format("EUR", -250), "-2.50 EUR");
    }

    #[test]
    fn the_list_holds_every_accepted_code_and_no_other() {
        let all = Currency::all();
        assert!(all.len() > 140, "{}", all.len());
        assert!(all.iter().any(|c| c.code() == "KWD"));
        assert!(all
            .iter()
            .all(|c| Currency::from_code(c.code()) == Some(*c)));
        assert!(all.windows(2).all(|w| w[0].code() < w[1].code()));
    }
}
