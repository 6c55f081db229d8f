//! Converting payouts to the report currency: revenue in reports is summed over conversions, so with networks
//! paying in several currencies it must be in one. The rate table is configuration (`--report-currency`,
//! `--currency-rates EUR=1.08,GBP=1.27`: what one unit of each currency is worth in the report currency).
//!
//! Without a report currency revenue is the payout as the network reported it. A payout in a currency the table
//! has no rate for is still recorded (a conversion is never refused over configuration), with its revenue
//! unconverted; the conversion keeps its payout and currency, and the miss is logged and counted.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};

/// Money keeps six decimal places, like analytics.
const PLACES: u32 = 6;

/// The report currency and the rates to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrencyRates {
    report: Option<String>,
    rates: BTreeMap<String, Decimal>,
}

/// What [`CurrencyRates::revenue`] did with a payout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revenue {
    /// No report currency is configured, or the payout is already in it.
    AsPaid(Decimal),
    /// Converted at the table's rate.
    Converted(Decimal),
    /// The table has no rate for the payout's currency: the payout, unconverted.
    NoRate(Decimal),
}

impl Revenue {
    /// The revenue to record.
    pub fn amount(self) -> Decimal {
        match self {
            Revenue::AsPaid(d) | Revenue::Converted(d) | Revenue::NoRate(d) => d,
        }
    }
}

fn currency_code(s: &str, what: &str) -> Result<String, String> {
    let c = s.trim().to_ascii_uppercase();
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(c)
    } else {
        Err(format!("{what} `{}` is not a three-letter currency code", s.trim()))
    }
}

impl CurrencyRates {
    /// No conversion: revenue is the payout.
    pub fn none() -> Self {
        Self::default()
    }

    /// The table from `--report-currency` and `--currency-rates` (`CODE=RATE` pairs separated by commas or
    /// whitespace; a rate is a positive decimal). Rates without a report currency are an error, since they
    /// would be ignored.
    pub fn parse(report: Option<&str>, rates: &str) -> Result<Self, String> {
        let report = report.map(str::trim).filter(|r| !r.is_empty()).map(|r| currency_code(r, "the report currency"));
        let report = report.transpose()?;
        let mut table = BTreeMap::new();
        for pair in rates.split([',', ' ', '\n', '\t']).map(str::trim).filter(|p| !p.is_empty()) {
            let (code, rate) =
                pair.split_once('=').ok_or_else(|| format!("`{pair}` is not CODE=RATE (e.g. EUR=1.08)"))?;
            let code = currency_code(code, "currency")?;
            let rate: Decimal = rate
                .trim()
                .parse()
                .ok()
                .filter(|r: &Decimal| *r > Decimal::ZERO)
                .ok_or_else(|| format!("the rate of {code} (`{}`) is not a positive decimal", rate.trim()))?;
            if table.insert(code.clone(), rate).is_some() {
                return Err(format!("{code} has two rates"));
            }
        }
        if report.is_none() && !table.is_empty() {
            return Err("currency rates need a report currency (--report-currency) to convert to".to_owned());
        }
        Ok(Self { report, rates: table })
    }

    /// The report currency, when one is configured.
    pub fn report_currency(&self) -> Option<&str> {
        self.report.as_deref()
    }

    /// The revenue of a payout of `amount` in `currency`.
    pub fn revenue(&self, amount: Decimal, currency: &str) -> Revenue {
        let Some(report) = &self.report else { return Revenue::AsPaid(amount) };
        if currency.eq_ignore_ascii_case(report) {
            return Revenue::AsPaid(amount);
        }
        match self.rates.get(&currency.to_ascii_uppercase()) {
            Some(rate) => Revenue::Converted(
                amount
                    .checked_mul(*rate)
                    .unwrap_or(Decimal::MAX)
                    .round_dp_with_strategy(PLACES, RoundingStrategy::MidpointAwayFromZero)
                    .normalize(),
            ),
            None => Revenue::NoRate(amount),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn payouts_convert_to_the_report_currency() {
        let t = CurrencyRates::parse(Some("usd"), "EUR=1.08, gbp=1.27\nJPY=0.0067").unwrap();
        assert_eq!(t.report_currency(), Some("USD"));
        assert_eq!(t.revenue(d("10"), "EUR"), Revenue::Converted(d("10.8")));
        assert_eq!(t.revenue(d("3.333333"), "GBP"), Revenue::Converted(d("4.233333")), "rounded to 6 places");
        assert_eq!(t.revenue(d("1500"), "jpy"), Revenue::Converted(d("10.05")));
        assert_eq!(t.revenue(d("12.50"), "USD"), Revenue::AsPaid(d("12.50")));
        assert_eq!(t.revenue(d("7"), "CHF"), Revenue::NoRate(d("7")));
        assert_eq!(CurrencyRates::none().revenue(d("7"), "CHF"), Revenue::AsPaid(d("7")));
        assert_eq!(CurrencyRates::parse(Some("EUR"), "").unwrap().revenue(d("2"), "USD"), Revenue::NoRate(d("2")));
    }

    #[test]
    fn a_bad_table_is_refused_with_a_reason() {
        for (report, rates, want) in [
            (Some("US"), "", "the report currency `US` is not a three-letter currency code"),
            (Some("USD"), "EUR", "`EUR` is not CODE=RATE (e.g. EUR=1.08)"),
            (Some("USD"), "EUR=0", "the rate of EUR (`0`) is not a positive decimal"),
            (Some("USD"), "EUR=-1", "the rate of EUR (`-1`) is not a positive decimal"),
            (Some("USD"), "EUR=abc", "the rate of EUR (`abc`) is not a positive decimal"),
            (Some("USD"), "EURO=1", "currency `EURO` is not a three-letter currency code"),
            (Some("USD"), "EUR=1,eur=2", "EUR has two rates"),
            (None, "EUR=1.08", "currency rates need a report currency (--report-currency) to convert to"),
        ] {
            assert_eq!(CurrencyRates::parse(report, rates), Err(want.to_owned()), "{report:?} {rates}");
        }
        assert_eq!(CurrencyRates::parse(None, " ").unwrap(), CurrencyRates::none());
    }
}
