//! A small MaxMind DB (`.mmdb`) writer for tests: an IPv6 search tree (IPv4 networks under `::/96`, where
//! MaxMind's own databases keep them), 24-bit records, and a data section of maps, strings and unsigned
//! integers — enough for records shaped like GeoLite2 Country, City and ASN.

use std::net::IpAddr;

/// A value in a record.
pub enum V {
    Str(&'static str),
    U32(u32),
    Map(Vec<(&'static str, V)>),
    Array(Vec<V>),
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    // Sizes up to 28 fit the control byte; 29 + one byte reaches 284, plenty here.
    let (bits, extra) = if size < 29 { (size, None) } else { (29, Some(size - 29)) };
    let bits = u8::try_from(bits).expect("five bits");
    if kind <= 7 {
        out.push((kind << 5) | bits);
    } else {
        out.push(bits);
        out.push(kind - 7);
    }
    if let Some(extra) = extra {
        out.push(u8::try_from(extra).expect("sizes up to 284"));
    }
}

fn uint(out: &mut Vec<u8>, kind: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

fn encode(out: &mut Vec<u8>, v: &V) {
    match v {
        V::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        V::U32(n) => uint(out, 6, u64::from(*n)),
        V::Map(pairs) => {
            control(out, 7, pairs.len());
            for (k, v) in pairs {
                encode(out, &V::Str(k));
                encode(out, v);
            }
        }
        V::Array(items) => {
            control(out, 11, items.len());
            for v in items {
                encode(out, v);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

/// Writes a database of `database_type` with one record per network (`(address, prefix length)`; IPv4
/// prefixes count IPv4 bits). Networks must not overlap.
pub fn write(database_type: &'static str, networks: Vec<((IpAddr, u8), V)>) -> Vec<u8> {
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty; 2]];
    let mut data = Vec::new();
    for ((ip, prefix), value) in networks {
        let (bits, depth) = match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), usize::from(prefix) + 96),
            IpAddr::V6(v6) => (u128::from(v6), usize::from(prefix)),
        };
        let offset = data.len();
        encode(&mut data, &value);
        let mut node = 0;
        for i in 0..depth {
            let bit = usize::from((bits >> (127 - i)) & 1 == 1);
            if i + 1 == depth {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty; 2]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for rec in node {
            let v = match *rec {
                Rec::Empty => count,
                Rec::Node(n) => n,
                Rec::Data(off) => count + 16 + off,
            };
            let v = u32::try_from(v).expect("fits 24 bits");
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let meta = V::Map(vec![
        ("binary_format_major_version", V::U32(2)),
        ("binary_format_minor_version", V::U32(0)),
        ("build_epoch", V::U32(1_700_000_000)),
        ("database_type", V::Str(database_type)),
        ("description", V::Map(vec![("en", V::Str("test database"))])),
        ("ip_version", V::U32(6)),
        ("languages", V::Array(vec![V::Str("en")])),
        ("node_count", V::U32(u32::try_from(count).expect("node count"))),
        ("record_size", V::U32(24)),
    ]);
    let mut m = Vec::new();
    encode_meta(&mut m, &meta);
    out.extend_from_slice(&m);
    out
}

/// Metadata wants `uint16` for versions and sizes and `uint64` for the build time.
fn encode_meta(out: &mut Vec<u8>, v: &V) {
    let V::Map(pairs) = v else { unreachable!() };
    control(out, 7, pairs.len());
    for (k, v) in pairs {
        encode(out, &V::Str(k));
        match (*k, v) {
            (
                "binary_format_major_version" | "binary_format_minor_version" | "ip_version" | "record_size",
                V::U32(n),
            ) => uint(out, 5, u64::from(*n)),
            ("build_epoch", V::U32(n)) => uint(out, 9, u64::from(*n)),
            _ => encode(out, v),
        }
    }
}
