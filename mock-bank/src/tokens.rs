//! Test card tokens: the business outcome of a charge, as a card network's test cards decide it.

use payment_types::bank::ChargeStatus;

/// Every token with a fixed outcome, for the docs and tests: (token, decline code).
pub(crate) const DECLINING_TOKENS: [(&str, &str); 6] = [
    ("tok_decline", "card_declined"),
    ("tok_insufficient_funds", "insufficient_funds"),
    ("tok_expired_card", "expired_card"),
    ("tok_incorrect_cvc", "incorrect_cvc"),
    ("tok_lost_card", "lost_card"),
    ("tok_fraudulent", "fraudulent"),
];

/// The outcome for `source`: the declining tokens above decline with their code; every other
/// token (`tok_visa`, `tok_mastercard`, anything else) succeeds.
pub(crate) fn outcome_for(source: &str) -> (ChargeStatus, Option<&'static str>) {
    DECLINING_TOKENS
        .iter()
        .find(|(token, _)| *token == source)
        .map_or((ChargeStatus::Succeeded, None), |(_, code)| {
            (ChargeStatus::Declined, Some(*code))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tok_visa_succeeds_and_the_decline_tokens_decline_with_their_code() {
        assert_eq!(outcome_for("tok_visa"), (ChargeStatus::Succeeded, None));
        assert_eq!(
            outcome_for("tok_decline"),
            (ChargeStatus::Declined, Some("card_declined"))
        );
        assert_eq!(
            outcome_for("tok_insufficient_funds"),
            (ChargeStatus::Declined, Some("insufficient_funds"))
        );
    }
}
