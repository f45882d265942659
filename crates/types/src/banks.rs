//! The list of banks a payment API routes over, as its operator gives it (`--bank NAME=URL`,
//! repeatable, or the single `--bank-url`): parsed by one set of rules for every program that
//! takes it (the payment API, and the dashboard that must name the same banks).

use url::Url;

/// The name of the one bank of `--bank-url` (or of the default).
pub const SINGLE_BANK_NAME: &str = "bank";

/// Where the bank is when neither `--bank-url` nor `--bank` is given.
pub const DEFAULT_BANK_URL: &str = "http://127.0.0.1:8001";

/// The banks in priority order: each `NAME=URL` of `entries` (blank ones ignored), or, with
/// none, the one bank of `single` (named [`SINGLE_BANK_NAME`]; [`DEFAULT_BANK_URL`] when
/// absent). Refuses both at once, an entry that is not `NAME=URL`, a name `valid_name` refuses,
/// a URL that is not http(s) with a host, and a name given twice; the error says which, for
/// the caller to prefix with its flag.
pub fn parse_banks(
    entries: &[String],
    single: Option<&Url>,
    valid_name: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Url)>, String> {
    let entries: Vec<&str> = entries
        .iter()
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
        .collect();
    if entries.is_empty() {
        let url = match single {
            Some(url) => url.clone(),
            None => DEFAULT_BANK_URL
                .parse()
                .expect("the default bank URL is valid"),
        };
        check_url(SINGLE_BANK_NAME, &url)?;
        return Ok(vec![(SINGLE_BANK_NAME.to_owned(), url)]);
    }
    if let Some(url) = single {
        return Err(format!(
            "and --bank-url (BANK_URL, {url}) were both given: list every bank with --bank NAME=URL"
        ));
    }
    let mut banks: Vec<(String, Url)> = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some((name, url)) = entry.split_once('=') else {
            return Err(format!(
                "{entry:?} is not NAME=URL (e.g. bank-a=http://127.0.0.1:8001)"
            ));
        };
        let name = name.trim();
        if !valid_name(name) {
            return Err(format!(
                "name {name:?} in {entry:?} must be letters, digits, - and _"
            ));
        }
        let url: Url = url
            .trim()
            .parse()
            .map_err(|e| format!("{name}: {:?} is not a URL: {e}", url.trim()))?;
        check_url(name, &url)?;
        if banks.iter().any(|(known, _)| known == name) {
            return Err(format!(
                "names bank {name:?} twice: each bank needs its own name"
            ));
        }
        banks.push((name.to_owned(), url));
    }
    Ok(banks)
}

fn check_url(name: &str, url: &Url) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{name}: {url} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: &str) -> bool {
        true
    }

    #[test]
    fn entries_in_order_or_the_single_bank_and_every_refusal() {
        let list = |e: &[&str]| e.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let banks = parse_banks(
            &list(&["a=http://127.0.0.1:1", " b = https://x.example "]),
            None,
            any,
        )
        .unwrap();
        assert_eq!(banks[0].0, "a");
        assert_eq!(
            banks[1],
            ("b".to_owned(), "https://x.example".parse().unwrap())
        );
        let single = parse_banks(&[], None, any).unwrap();
        assert_eq!(
            single,
            [(
                SINGLE_BANK_NAME.to_owned(),
                DEFAULT_BANK_URL.parse().unwrap()
            )]
        );
        let url: Url = "http://127.0.0.1:9".parse().unwrap();
        assert!(parse_banks(&list(&["a=http://h"]), Some(&url), any)
            .unwrap_err()
            .contains("both"));
        assert!(parse_banks(&list(&["a"]), None, any)
            .unwrap_err()
            .contains("NAME=URL"));
        assert!(
            parse_banks(&list(&["a b=http://h"]), None, |n| !n.contains(' '))
                .unwrap_err()
                .contains("letters")
        );
        assert!(parse_banks(&list(&["a=ftp://h"]), None, any)
            .unwrap_err()
            .contains("http"));
        assert!(parse_banks(&list(&["a=http://h", "a=http://i"]), None, any)
            .unwrap_err()
            .contains("twice"));
    }
}
