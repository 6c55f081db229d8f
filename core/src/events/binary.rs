//! The compact binary form of click and trafficback events (wire format 2), written on the click path.
//!
//! ```text
//! 0x02 kind  field…
//! ```
//!
//! `0x02` is the format (a JSON message starts with `{`), `kind` is `1` (click) or `2` (trafficback), then the
//! fields of [`ClickEvent`] in a fixed order. A string is a varint byte length and UTF-8 bytes; `ts` and `asn`
//! are varints (`ts` zigzag); `trafficbackDepth` is one byte; `subs` is a varint count and that many strings;
//! `cost` is the 16 bytes of `rust_decimal`'s serialised form; `isBot` and `isUnique` are bits 0 and 1 of one
//! byte. Fields are only ever added at the end: a reader takes missing trailing fields as their defaults and
//! ignores trailing bytes it does not know, as it ignores unknown JSON fields.

use rust_decimal::Decimal;

use super::ClickEvent;

/// The first byte of a binary message.
pub const BINARY_FORMAT: u8 = 2;
const CLICK: u8 = 1;
const TRAFFICBACK: u8 = 2;

/// A click as the click path has it: every text borrowed, so encoding it allocates only its buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClickRef<'a> {
    pub click_id: &'a str,
    pub ts: i64,
    pub campaign_id: &'a str,
    pub campaign_key: &'a str,
    pub stream_id: &'a str,
    pub destination_id: &'a str,
    pub traffic_source_id: &'a str,
    pub team_id: &'a str,
    pub trafficback_depth: u8,
    pub source: &'a str,
    pub source_click_id: &'a str,
    pub ip: &'a str,
    pub country: &'a str,
    pub region: &'a str,
    pub city: &'a str,
    pub isp: &'a str,
    pub asn: u32,
    pub device_type: &'a str,
    pub os: &'a str,
    pub browser: &'a str,
    pub language: &'a str,
    pub user_agent: &'a str,
    pub referrer: &'a str,
    pub utm_source: &'a str,
    pub utm_medium: &'a str,
    pub utm_campaign: &'a str,
    pub utm_content: &'a str,
    pub utm_term: &'a str,
    /// `sub1` … `sub10`; trailing empty ones are not written.
    pub subs: [&'a str; 10],
    pub cost: Decimal,
    pub currency: &'a str,
    pub is_bot: bool,
    pub is_unique: bool,
}

impl<'a> ClickRef<'a> {
    /// Borrows `c` (its first ten subs).
    pub fn of(c: &'a ClickEvent) -> Self {
        let mut subs = [""; 10];
        for (slot, s) in subs.iter_mut().zip(&c.subs) {
            *slot = s;
        }
        Self {
            click_id: &c.click_id,
            ts: c.ts,
            campaign_id: &c.campaign_id,
            campaign_key: &c.campaign_key,
            stream_id: &c.stream_id,
            destination_id: &c.destination_id,
            traffic_source_id: &c.traffic_source_id,
            team_id: &c.team_id,
            trafficback_depth: c.trafficback_depth,
            source: &c.source,
            source_click_id: &c.source_click_id,
            ip: &c.ip,
            country: &c.country,
            region: &c.region,
            city: &c.city,
            isp: &c.isp,
            asn: c.asn,
            device_type: &c.device_type,
            os: &c.os,
            browser: &c.browser,
            language: &c.language,
            user_agent: &c.user_agent,
            referrer: &c.referrer,
            utm_source: &c.utm_source,
            utm_medium: &c.utm_medium,
            utm_campaign: &c.utm_campaign,
            utm_content: &c.utm_content,
            utm_term: &c.utm_term,
            subs,
            cost: c.cost,
            currency: &c.currency,
            is_bot: c.is_bot,
            is_unique: c.is_unique,
        }
    }

    /// The message bytes of this click (`trafficback`: of a trafficback click).
    pub fn encode(&self, trafficback: bool) -> Vec<u8> {
        // The strings between the fixed-size fields, in wire order.
        let ids = [
            self.campaign_id,
            self.campaign_key,
            self.stream_id,
            self.destination_id,
            self.traffic_source_id,
            self.team_id,
        ];
        let visitor = [self.source, self.source_click_id, self.ip, self.country, self.region, self.city, self.isp];
        let device = [
            self.device_type,
            self.os,
            self.browser,
            self.language,
            self.user_agent,
            self.referrer,
            self.utm_source,
            self.utm_medium,
            self.utm_campaign,
            self.utm_content,
            self.utm_term,
        ];
        let subs = &self.subs[..self.subs.iter().rposition(|s| !s.is_empty()).map_or(0, |last| last + 1)];
        let ends = [self.click_id, self.currency];
        let texts = ends.iter().chain(&ids).chain(&visitor).chain(&device).chain(subs);
        let mut out = Vec::with_capacity(texts.map(|s| s.len() + 2).sum::<usize>() + 48);
        out.extend_from_slice(&[BINARY_FORMAT, if trafficback { TRAFFICBACK } else { CLICK }]);
        put_str(&mut out, self.click_id);
        put_varint(&mut out, zigzag(self.ts));
        ids.iter().for_each(|s| put_str(&mut out, s));
        out.push(self.trafficback_depth);
        visitor.iter().for_each(|s| put_str(&mut out, s));
        put_varint(&mut out, u64::from(self.asn));
        device.iter().for_each(|s| put_str(&mut out, s));
        put_varint(&mut out, subs.len() as u64);
        subs.iter().for_each(|s| put_str(&mut out, s));
        out.extend_from_slice(&self.cost.serialize());
        put_str(&mut out, self.currency);
        out.push(u8::from(self.is_bot) | u8::from(self.is_unique) << 1);
        out
    }
}

/// Why a binary message could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BinaryError {
    #[error("unknown binary event kind {0}")]
    Kind(u8),
    #[error("field `{0}` is cut off")]
    Truncated(&'static str),
    #[error("field `{0}` is not UTF-8")]
    NotUtf8(&'static str),
    #[error("field `{0}` is out of range")]
    Range(&'static str),
}

/// Reads a binary message (its first byte is [`BINARY_FORMAT`]): `(trafficback, click)`.
pub fn decode_click(bytes: &[u8]) -> Result<(bool, ClickEvent), BinaryError> {
    let kind = *bytes.get(1).ok_or(BinaryError::Truncated("kind"))?;
    let trafficback = match kind {
        CLICK => false,
        TRAFFICBACK => true,
        other => return Err(BinaryError::Kind(other)),
    };
    let mut r = Reader { rest: &bytes[2..] };
    let mut c = ClickEvent { click_id: r.str("clickId")?, ..ClickEvent::default() };
    if r.done() {
        return Ok((trafficback, c));
    }
    c.ts = unzigzag(r.varint("ts")?);
    for (field, name) in [
        (&mut c.campaign_id, "campaignId"),
        (&mut c.campaign_key, "campaignKey"),
        (&mut c.stream_id, "streamId"),
        (&mut c.destination_id, "destinationId"),
        (&mut c.traffic_source_id, "trafficSourceId"),
        (&mut c.team_id, "teamId"),
    ] {
        *field = r.str(name)?;
    }
    c.trafficback_depth = r.byte("trafficbackDepth")?;
    for (field, name) in [
        (&mut c.source, "source"),
        (&mut c.source_click_id, "sourceClickId"),
        (&mut c.ip, "ip"),
        (&mut c.country, "country"),
        (&mut c.region, "region"),
        (&mut c.city, "city"),
        (&mut c.isp, "isp"),
    ] {
        *field = r.str(name)?;
    }
    c.asn = u32::try_from(r.varint("asn")?).map_err(|_| BinaryError::Range("asn"))?;
    for (field, name) in [
        (&mut c.device_type, "deviceType"),
        (&mut c.os, "os"),
        (&mut c.browser, "browser"),
        (&mut c.language, "language"),
        (&mut c.user_agent, "userAgent"),
        (&mut c.referrer, "referrer"),
        (&mut c.utm_source, "utmSource"),
        (&mut c.utm_medium, "utmMedium"),
        (&mut c.utm_campaign, "utmCampaign"),
        (&mut c.utm_content, "utmContent"),
        (&mut c.utm_term, "utmTerm"),
    ] {
        *field = r.str(name)?;
    }
    let subs = r.varint("subs")?;
    if subs > 64 {
        return Err(BinaryError::Range("subs"));
    }
    c.subs = (0..subs).map(|_| r.str("subs")).collect::<Result<_, _>>()?;
    let cost: [u8; 16] = r.take(16, "cost")?.try_into().map_err(|_| BinaryError::Truncated("cost"))?;
    c.cost = Decimal::deserialize(cost);
    c.currency = r.str("currency")?;
    let flags = r.byte("flags")?;
    c.is_bot = flags & 1 != 0;
    c.is_unique = flags & 2 != 0;
    Ok((trafficback, c))
}

struct Reader<'b> {
    rest: &'b [u8],
}

impl<'b> Reader<'b> {
    fn done(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'b [u8], BinaryError> {
        if self.rest.len() < n {
            return Err(BinaryError::Truncated(field));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn byte(&mut self, field: &'static str) -> Result<u8, BinaryError> {
        Ok(self.take(1, field)?[0])
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, BinaryError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(field)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(BinaryError::Range(field))
    }

    fn str(&mut self, field: &'static str) -> Result<String, BinaryError> {
        let len = usize::try_from(self.varint(field)?).map_err(|_| BinaryError::Range(field))?;
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| BinaryError::NotUtf8(field))
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> ClickEvent {
        let s = |p: &str| format!("{p} é\u{1F600}");
        ClickEvent {
            click_id: s("id"),
            ts: 1_764_000_000_123,
            campaign_id: s("c"),
            campaign_key: s("k"),
            stream_id: s("s"),
            destination_id: s("d"),
            traffic_source_id: s("t"),
            team_id: s("team"),
            trafficback_depth: 3,
            source: s("src"),
            source_click_id: s("sc"),
            ip: "2001:db8::1".into(),
            country: "DE".into(),
            region: s("r"),
            city: s("city"),
            isp: s("isp"),
            asn: u32::MAX,
            device_type: "mobile".into(),
            os: s("os"),
            browser: s("b"),
            language: "de".into(),
            user_agent: s("ua"),
            referrer: s("ref"),
            utm_source: s("us"),
            utm_medium: s("um"),
            utm_campaign: s("uc"),
            utm_content: s("uo"),
            utm_term: s("ut"),
            subs: vec!["a".into(), String::new(), "c".into()],
            cost: "-12.345678".parse().unwrap_or_default(),
            currency: "EUR".into(),
            is_bot: true,
            is_unique: true,
        }
    }

    #[test]
    fn every_field_round_trips() {
        for (trafficback, c) in
            [(false, full()), (true, ClickEvent::default()), (false, ClickEvent { ts: -5, ..full() })]
        {
            assert_eq!(decode_click(&ClickRef::of(&c).encode(trafficback)), Ok((trafficback, c)));
        }
    }

    #[test]
    fn trailing_empty_subs_are_not_written() {
        let c = ClickEvent { subs: vec!["x".into(), String::new(), String::new()], ..full() };
        let (_, back) = decode_click(&ClickRef::of(&c).encode(false)).unwrap();
        assert_eq!(back.subs, vec!["x".to_owned()]);
    }

    #[test]
    fn older_and_newer_layouts_are_read() {
        let bytes = ClickRef::of(&full()).encode(false);
        // A newer writer's extra fields are ignored.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[7, 7, 7]);
        assert_eq!(decode_click(&longer), decode_click(&bytes));
        // A message of only the ID (the shortest a writer may send) leaves the rest at defaults.
        let mut short = vec![BINARY_FORMAT, CLICK];
        put_str(&mut short, "only-id");
        let (_, c) = decode_click(&short).unwrap();
        assert_eq!(c, ClickEvent { click_id: "only-id".into(), ..ClickEvent::default() });
    }

    #[test]
    fn damaged_messages_say_which_field() {
        let bytes = ClickRef::of(&full()).encode(false);
        for cut in [1, 3, 20, bytes.len() - 1] {
            let err = decode_click(&bytes[..cut]).unwrap_err();
            assert!(matches!(err, BinaryError::Truncated(_)), "cut at {cut}: {err}");
        }
        assert_eq!(decode_click(&[BINARY_FORMAT, 9]), Err(BinaryError::Kind(9)));
        let mut bad = vec![BINARY_FORMAT, CLICK, 2, 0xff, 0xfe];
        assert_eq!(decode_click(&bad), Err(BinaryError::NotUtf8("clickId")));
        bad = vec![BINARY_FORMAT, CLICK, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(decode_click(&bad), Err(BinaryError::Range("clickId")));
    }
}
