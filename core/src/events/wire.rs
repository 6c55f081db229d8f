//! The wire format: one JSON object per message, `{"v":1,"type":"conversion","data":{…}}`, except clicks and
//! trafficback clicks, which travel in the compact binary form of [`super::binary`] (first byte `0x02`).
//! [`decode`] reads both, and clicks in JSON too.

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::Event;

/// The wire format version this build writes. Readers accept every version up to this one.
pub const WIRE_VERSION: u16 = 1;

/// Why a message could not be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a TraffoFlex event envelope: {0}")]
    Envelope(serde_json::Error),
    #[error("wire format version {0} is newer than this build understands ({WIRE_VERSION})")]
    Version(u16),
    #[error("unknown event type `{0}`")]
    Type(String),
    #[error("bad `{kind}` event: {source}")]
    Data { kind: String, source: serde_json::Error },
    #[error("bad binary click event: {0}")]
    Binary(#[from] super::binary::BinaryError),
}

#[derive(Serialize)]
struct Out<'a, T: Serialize> {
    v: u16,
    #[serde(rename = "type")]
    kind: &'static str,
    data: &'a T,
}

#[derive(Deserialize)]
struct In<'a> {
    v: u16,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn out<T: Serialize>(kind: &'static str, data: &T) -> Vec<u8> {
    // Serialising plain structs of strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&Out { v: WIRE_VERSION, kind, data }).unwrap_or_default()
}

/// The event's bytes on the wire.
pub fn encode(event: &Event) -> Vec<u8> {
    match event {
        Event::Click(c) => super::binary::ClickRef::of(c).encode(false),
        Event::Trafficback(c) => super::binary::ClickRef::of(c).encode(true),
        Event::Conversion(c) => out("conversion", c),
        Event::PostbackLog(p) => out("postbackLog", p),
        Event::DestinationHealth(h) => out("destinationHealth", h),
    }
}

/// Reads one message; every failure says what was wrong so it can be shown as an ingestion error.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.first() == Some(&super::binary::BINARY_FORMAT) {
        let (trafficback, click) = super::binary::decode_click(bytes)?;
        return Ok(if trafficback { Event::Trafficback(click) } else { Event::Click(click) });
    }
    // Messages as `encode` writes them (`v` and `type` before `data`) are read in one pass; anything else,
    // failures included, goes through the envelope first, which says precisely what is wrong.
    match serde_json::from_slice::<OnePass>(bytes) {
        Ok(OnePass(event)) => Ok(event),
        Err(_) => decode_in_two_passes(bytes),
    }
}

/// An event read in one pass: `data` straight into its type, once `v` and `type` were read before it.
struct OnePass(Event);

impl<'de> Deserialize<'de> for OnePass {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(OnePassVisitor)
    }
}

struct OnePassVisitor;

impl<'de> Visitor<'de> for OnePassVisitor {
    type Value = OnePass;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event envelope with `v` and `type` before `data`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OnePass, A::Error> {
        let (mut v, mut kind, mut event) = (None, None, None);
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "v" if v.is_none() => v = Some(map.next_value::<u16>()?),
                "type" if kind.is_none() => kind = Some(map.next_value::<&'de str>()?),
                "data" if event.is_none() => {
                    let kind = match (v, kind) {
                        (Some(v), Some(kind)) if v <= WIRE_VERSION => kind,
                        _ => return Err(de::Error::custom("`data` before a known `v` and `type`")),
                    };
                    event = Some(match kind {
                        "click" => Event::Click(map.next_value()?),
                        "trafficback" => Event::Trafficback(map.next_value()?),
                        "conversion" => Event::Conversion(map.next_value()?),
                        "postbackLog" => Event::PostbackLog(map.next_value()?),
                        "destinationHealth" => Event::DestinationHealth(map.next_value()?),
                        _ => return Err(de::Error::custom("unknown event type")),
                    });
                }
                "v" | "type" | "data" => return Err(de::Error::custom("duplicate field")),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        event.map(OnePass).ok_or_else(|| de::Error::custom("no `data`"))
    }
}

fn decode_in_two_passes(bytes: &[u8]) -> Result<Event, DecodeError> {
    let env: In<'_> = serde_json::from_slice(bytes).map_err(DecodeError::Envelope)?;
    if env.v > WIRE_VERSION {
        return Err(DecodeError::Version(env.v));
    }
    let raw = env.data.get();
    let data = |e| DecodeError::Data { kind: env.kind.to_owned(), source: e };
    Ok(match env.kind {
        "click" => Event::Click(serde_json::from_str(raw).map_err(data)?),
        "trafficback" => Event::Trafficback(serde_json::from_str(raw).map_err(data)?),
        "conversion" => Event::Conversion(serde_json::from_str(raw).map_err(data)?),
        "postbackLog" => Event::PostbackLog(serde_json::from_str(raw).map_err(data)?),
        "destinationHealth" => Event::DestinationHealth(serde_json::from_str(raw).map_err(data)?),
        other => return Err(DecodeError::Type(other.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ClickEvent, ConversionEvent, ConversionStatus, HealthEvent, PostbackLogEvent};

    fn samples() -> Vec<Event> {
        let click = ClickEvent {
            click_id: "c1".into(),
            ts: 1_764_000_000_123,
            campaign_id: "camp".into(),
            subs: vec!["a".into(), String::new(), "c".into()],
            cost: "0.05".parse().unwrap_or_default(),
            currency: "USD".into(),
            is_unique: true,
            ..Default::default()
        };
        vec![
            Event::Click(click.clone()),
            Event::Trafficback(ClickEvent { trafficback_depth: 1, ..click }),
            Event::Conversion(ConversionEvent {
                conversion_id: "v1".into(),
                revision: 2,
                status: ConversionStatus::Pending,
                payout: "12.340000".parse().unwrap_or_default(),
                ..Default::default()
            }),
            Event::PostbackLog(PostbackLogEvent { id: "p1".into(), outcome: "accepted".into(), ..Default::default() }),
            Event::DestinationHealth(HealthEvent { id: "h1".into(), healthy: true, ..Default::default() }),
        ]
    }

    #[test]
    fn one_pass_and_two_passes_agree() {
        for e in samples() {
            let bytes = json(&e);
            assert_eq!(decode_in_two_passes(&bytes).unwrap(), e);
            assert!(serde_json::from_slice::<OnePass>(&bytes).is_ok(), "encode's order is read in one pass");
        }
        // Other key orders, escaped keys and unknown envelope fields still decode, through the envelope.
        let data_first = br#"{"data":{"clickId":"x"},"type":"click","v":1}"#;
        assert!(serde_json::from_slice::<OnePass>(data_first).is_err());
        let escaped = br#"{"v":1,"extra":[1,{"a":2}],"\u0074ype":"click","data":{"clickId":"x"}}"#;
        for bytes in [data_first.as_slice(), escaped.as_slice()] {
            match decode(bytes).unwrap() {
                Event::Click(c) => assert_eq!(c.click_id, "x"),
                other => panic!("{other:?}"),
            }
        }
        let twice = br#"{"v":1,"type":"click","type":"conversion","data":{"clickId":"x"}}"#;
        assert!(decode(twice).unwrap_err().to_string().contains("duplicate field"));
    }

    /// Every event in the JSON envelope, clicks included (as earlier releases wrote them).
    fn json(e: &Event) -> Vec<u8> {
        match e {
            Event::Click(c) => out("click", c),
            Event::Trafficback(c) => out("trafficback", c),
            other => encode(other),
        }
    }

    #[test]
    fn every_event_round_trips() {
        for e in samples() {
            assert_eq!(decode(&encode(&e)).unwrap(), e);
            assert_eq!(decode(&json(&e)).unwrap(), e, "clicks in JSON are still read");
        }
    }

    #[test]
    fn clicks_are_binary_and_the_rest_documented_json() {
        let samples = samples();
        assert_eq!(encode(&samples[0])[..2], [super::super::binary::BINARY_FORMAT, 1]);
        assert_eq!(encode(&samples[1])[..2], [super::super::binary::BINARY_FORMAT, 2]);
        assert!(encode(&samples[0]).len() < json(&samples[0]).len() / 2, "the binary form is compact");
        let v: serde_json::Value = serde_json::from_slice(&encode(&samples[2])).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["type"], "conversion");
        assert_eq!(v["data"]["conversionId"], "v1");
        assert_eq!(v["data"]["payout"], "12.340000", "money is a decimal string, never a float");
        let v: serde_json::Value = serde_json::from_slice(&json(&samples[0])).unwrap();
        assert_eq!(
            (&v["type"], &v["data"]["cost"], &v["data"]["subs"][2]),
            (&"click".into(), &"0.05".into(), &"c".into())
        );
    }

    #[test]
    fn older_fields_missing_are_defaults_and_unknown_fields_are_ignored() {
        let e = decode(br#"{"v":1,"type":"click","data":{"clickId":"x","future":42}}"#).unwrap();
        let Event::Click(c) = e else { panic!("not a click") };
        assert_eq!(c.click_id, "x");
        assert_eq!(c.campaign_id, "");
    }

    #[test]
    fn bad_messages_say_why() {
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "not a TraffoFlex event envelope"),
            (br#"{"v":99,"type":"click","data":{}}"#, "version 99"),
            (br#"{"v":1,"type":"nope","data":{}}"#, "unknown event type `nope`"),
            (br#"{"v":1,"type":"click","data":{"ts":"soon"}}"#, "bad `click` event"),
            (br#"{"v":1,"type":"click"}"#, "not a TraffoFlex event envelope"),
            (&[2, 1, 5, b'a'], "bad binary click event: field `clickId` is cut off"),
        ];
        for (bytes, want) in cases {
            let err = decode(bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }
}
