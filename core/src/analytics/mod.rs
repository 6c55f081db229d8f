//! Analytics: the ClickHouse schema, its migrations, and the rows events become.

pub mod clickhouse;
pub mod rows;
pub mod schema;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

/// Why an analytics operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("ClickHouse: {0}")]
    ClickHouse(String),
    #[error("migration {version} ({name}) failed: {message}")]
    Migration { version: u32, name: &'static str, message: String },
}

/// Money in analytics is stored as whole millionths (Int64): exact sums, and a type every ClickHouse release has.
pub const MICROS: i64 = 1_000_000;

/// `value` in millionths, rounded half away from zero; saturates far beyond any real amount.
pub fn to_micros(value: Decimal) -> i64 {
    (value * Decimal::from(MICROS))
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .unwrap_or(if value.is_sign_negative() { i64::MIN } else { i64::MAX })
}

/// Millionths back to a decimal with six places.
pub fn from_micros(micros: i64) -> Decimal {
    Decimal::new(micros, 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_round_trips_through_micros() {
        for s in ["0", "0.05", "12.345678", "-3.5", "1000000.000001"] {
            let d: Decimal = s.parse().unwrap();
            assert_eq!(from_micros(to_micros(d)), d, "{s}");
        }
        assert_eq!(to_micros("0.0000005".parse().unwrap()), 1, "half a millionth rounds away from zero");
    }
}
