//! Address ranges and the lists a platform team configures: CIDRs, host names, and the
//! built-in classification of addresses no tenant-supplied URL should reach.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::Reason;

/// An address range: `10.0.0.0/8`, `fd00::/8`; a bare address is a range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The range of `prefix` bits around `addr` (host bits cleared); `None` when the prefix
    /// is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix)))
            }
            IpAddr::V6(a) if prefix <= 128 => {
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix)))
            }
            _ => return None,
        };
        Some(Cidr { addr, prefix })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// A single address (`/32` or `/128`).
    pub fn is_single(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Whether `ip` is in the range (an address of the other family never is).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & mask32(self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & mask128(self.prefix) == u128::from(n),
            _ => false,
        }
    }

    /// Whether all of `other` lies in this range.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    /// Only the plain notations (`10.0.0.0/8`, `::1`): a configuration value is not a URL.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a prefix length that is not 0 to {max}"))?,
        };
        Cidr::new(addr, prefix).ok_or_else(|| format!("{s:?} is not a CIDR"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One entry of an allow or deny list: an address range, or an exact host name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    Net(Cidr),
    Host(String),
}

impl FromStr for Entry {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(c) = s.parse::<Cidr>() {
            return Ok(Entry::Net(c));
        }
        if s.contains('/') || s.contains(':') {
            return Err(format!("{s:?} is not an IP address or CIDR"));
        }
        let name = normalize_name(s);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "{s:?} is neither an IP address, a CIDR nor a host name"
            ));
        }
        Ok(Entry::Host(name))
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Net(c) => c.fmt(f),
            Entry::Host(h) => f.write_str(h),
        }
    }
}

/// A comma-separated list of [`Entry`], as `XIN_OUTBOUND_ALLOW` and `XIN_OUTBOUND_DENY`
/// take it; empty items are ignored. Shown back in the same form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationList(pub Vec<Entry>);

impl DestinationList {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn nets(&self) -> impl Iterator<Item = &Cidr> {
        self.0.iter().filter_map(|e| match e {
            Entry::Net(c) => Some(c),
            Entry::Host(_) => None,
        })
    }

    /// Whether the list names this host exactly (`name` normalised).
    pub fn has_host(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|e| matches!(e, Entry::Host(h) if h == name))
    }
}

/// The items of a comma-separated list (blanks around them and empty items ignored).
fn parse_list<T: FromStr<Err = String>>(s: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::parse)
        .collect()
}

/// `items` joined by commas, as [`parse_list`] reads them back.
fn write_list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    let items: Vec<String> = items.iter().map(T::to_string).collect();
    f.write_str(&items.join(","))
}

impl FromStr for DestinationList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_list(s).map(DestinationList)
    }
}

impl fmt::Display for DestinationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, &self.0)
    }
}

/// A comma-separated list of ranges, as `XIN_SERVICE_CIDR` takes it (one per IP family on a
/// dual-stack cluster).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<Cidr>);

impl FromStr for CidrList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_list(s).map(CidrList)
    }
}

impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, &self.0)
    }
}

/// Lower-case, without the trailing dot of a fully qualified name.
pub fn normalize_name(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    n.strip_suffix('.').map(str::to_string).unwrap_or(n)
}

/// The IPv4 address an IPv6 address carries and that a host or gateway would reach in its
/// stead: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated but still
/// parsed) and NAT64 (`64:ff9b::a.b.c.d`).
pub fn embedded_ipv4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = a.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = a.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s[..6] {
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        [0, 0, 0, 0, 0, 0] if u128::from(a) > 1 => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0] => Some(low),
        _ => None,
    }
}

/// Cloud metadata services: AWS, Azure, GCP, OpenStack and DigitalOcean (169.254.169.254),
/// AWS ECS task metadata (169.254.170.2), Alibaba Cloud (100.100.100.200), Oracle Cloud
/// (192.0.0.192), and AWS's IPv6 endpoint (fd00:ec2::254).
const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Why an address is refused by default, if it is: the built-in classes only (the service
/// range and the lists are the policy's).
pub fn classify(ip: IpAddr) -> Option<Reason> {
    match ip {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => classify_v6(a),
    }
}

fn in4(a: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    u32::from(a) & mask32(prefix) == u32::from(Ipv4Addr::from(net))
}

fn classify_v4(a: Ipv4Addr) -> Option<Reason> {
    Some(match a {
        // Connecting to 0.0.0.0 reaches the local host on Linux.
        _ if in4(a, [0, 0, 0, 0], 8) => Reason::Unspecified,
        _ if METADATA_V4.contains(&a) => Reason::Metadata,
        _ if a.is_loopback() => Reason::Loopback,
        _ if a.is_private() => Reason::Private,
        _ if a.is_link_local() => Reason::LinkLocal,
        _ if in4(a, [100, 64, 0, 0], 10) => Reason::Cgnat,
        _ if a.is_broadcast() => Reason::Broadcast,
        _ if a.is_multicast() => Reason::Multicast,
        // 240/4 (future use), 192.0.0.0/24 (IETF protocol assignments), 198.18/15
        // (benchmarking): never a public service.
        _ if in4(a, [240, 0, 0, 0], 4)
            || in4(a, [192, 0, 0, 0], 24)
            || in4(a, [198, 18, 0, 0], 15) =>
        {
            Reason::Reserved
        }
        _ => return None,
    })
}

fn classify_v6(a: Ipv6Addr) -> Option<Reason> {
    let first = a.segments()[0];
    Some(match a {
        _ if a.is_unspecified() => Reason::Unspecified,
        _ if a.is_loopback() => Reason::Loopback,
        _ if a == METADATA_V6 => Reason::Metadata,
        _ if embedded_ipv4(a).is_some() => {
            return embedded_ipv4(a).and_then(classify_v4);
        }
        // fe80::/10 link-local; fec0::/10 the deprecated site-local, as internal as fc00::/7.
        _ if first & 0xffc0 == 0xfe80 => Reason::LinkLocal,
        _ if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 => Reason::UniqueLocal,
        _ if first & 0xff00 == 0xff00 => Reason::Multicast,
        // 100::/64, discard-only.
        _ if a.segments()[..4] == [0x100, 0, 0, 0] => Reason::Reserved,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_contain_and_print() {
        let c: Cidr = "10.96.7.1/12".parse().unwrap();
        assert_eq!(c.to_string(), "10.96.0.0/12");
        assert!(c.contains("10.111.255.255".parse().unwrap()));
        assert!(!c.contains("10.112.0.0".parse().unwrap()));
        assert!(!c.contains("::ffff:10.96.0.1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.is_single() && one.to_string() == "127.0.0.1/32");
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(all.covers(&c) && !c.covers(&all) && c.covers(&c));
        let v6: Cidr = "fd00:10:96::/108".parse().unwrap();
        assert!(v6.contains("fd00:10:96::a".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "0x7f.1",
            "10.0.0.0/x",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_take_cidrs_and_host_names_separated_by_commas() {
        let l: DestinationList = " 127.0.0.1/32, LLM.corp.example. ,,fd00::/8"
            .parse()
            .unwrap();
        assert_eq!(l.to_string(), "127.0.0.1/32,llm.corp.example,fd00::/8");
        assert!(l.has_host("llm.corp.example"));
        assert_eq!(l.nets().count(), 2);
        assert_eq!(
            "".parse::<DestinationList>().unwrap(),
            DestinationList::default()
        );
        for bad in [
            "10.0.0.0/40",
            "http://x",
            "a..b",
            "bad host",
            "x:80",
            "ä.example",
        ] {
            let e = bad.parse::<DestinationList>().unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        let s: CidrList = "10.96.0.0/12, fd00:10:96::/108".parse().unwrap();
        assert_eq!(s.0.len(), 2);
        assert!("10.96.0.0/12,svc".parse::<CidrList>().is_err());
    }

    #[test]
    fn addresses_are_classified_by_their_range() {
        use Reason::*;
        for (ip, want) in [
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("192.168.1.1", Some(Private)),
            ("169.254.1.1", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("169.254.170.2", Some(Metadata)),
            ("100.100.100.200", Some(Metadata)),
            ("192.0.0.192", Some(Metadata)),
            ("100.64.0.1", Some(Cgnat)),
            ("100.127.255.255", Some(Cgnat)),
            ("100.128.0.1", None),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("255.255.255.255", Some(Broadcast)),
            ("224.0.0.1", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("8.8.8.8", None),
            ("203.0.113.9", None),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),
            ("::10.0.0.1", Some(Private)),
            ("64:ff9b::a9fe:a9fe", Some(Metadata)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fec0::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(Metadata)),
            ("ff02::1", Some(Multicast)),
            ("100::1", Some(Reserved)),
            ("2001:4860:4860::8888", None),
        ] {
            assert_eq!(classify(ip.parse().unwrap()), want, "{ip}");
        }
    }
}
