//! Federation (平台级联): hubs of different levels — county, city, province, nation — registered
//! with each other as peers, and the catalogue a child exposes upward aggregated by its parent
//! (目录汇聚).
//!
//! A peer hub is named by its 行政区划代码 (GB/T 2260) in its certificate
//! (`urn:xinqiao:hub:<division code>`), and may be under another platform's CA.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalogue::CatalogEntry;
use crate::error::Violations;
use crate::lifecycle::EntryState;
use crate::{Error, Result, text};

/// How a registered peer stands to this hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Relation {
    /// The level above (a city's province): it reads what this hub exposes upward.
    Parent,
    /// The level below (a city's county): this hub aggregates what it exposes.
    Child,
    /// A hub of the same level (another city); nothing is aggregated either way.
    Peer,
}

impl Relation {
    pub const ALL: [Relation; 3] = [Relation::Parent, Relation::Child, Relation::Peer];

    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Parent => "parent",
            Relation::Child => "child",
            Relation::Peer => "peer",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Relation::Parent => "上级平台",
            Relation::Child => "下级平台",
            Relation::Peer => "同级平台",
        }
    }

    pub fn parse(text: &str) -> Option<Relation> {
        Relation::ALL
            .into_iter()
            .find(|r| r.as_str() == text || r.label() == text)
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What this hub exposes to a peer. Stored whole, so that what cross-hub exchange will need
/// (datasets a peer may relay for) is added here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    /// 目录汇聚: the peer may read this hub's published catalogue — its own entries and what it
    /// aggregated from its children — as a change feed.
    pub catalogue: bool,
    /// Only entries whose classification starts with one of these (empty: every class).
    #[serde(default)]
    pub classifications: Vec<String>,
}

impl Exposure {
    /// Whether an entry of this classification is exposed.
    pub fn exposes_class(&self, classification: &str) -> bool {
        self.catalogue
            && (self.classifications.is_empty()
                || self
                    .classifications
                    .iter()
                    .any(|p| classification.starts_with(p.as_str())))
    }
}

/// A hub registered with this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHub {
    /// Its 行政区划代码, as its certificate names it.
    pub division_code: String,
    /// Its name, for people (for example 杭州市数据共享平台).
    pub name: String,
    /// Where it serves gRPC: `https://host:port`.
    pub address: String,
    /// The CA certificate(s), PEM, its certificates are issued by: trusted for this hub's
    /// identity only, and for its server certificate when this hub calls it.
    pub ca_pem: String,
    pub relation: Relation,
    pub exposure: Exposure,
    /// For a child: the position in its catalogue feed up to which its changes are applied here.
    pub catalogue_cursor: u64,
    pub added_by: String,
    pub added_at: DateTime<Utc>,
}

/// A peer as the admin sent it, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerDraft {
    pub division_code: String,
    pub name: String,
    pub address: String,
    pub ca_pem: String,
    pub relation: Option<Relation>,
    pub exposure: Exposure,
}

/// The longest CA bundle accepted (a few certificates).
pub const MAX_CA_PEM_BYTES: usize = 64 * 1024;

impl PeerDraft {
    /// Checks every field; `own_division` is this hub's, which cannot be its own peer.
    pub fn validate(self, own_division: &str, added_by: &str, at: DateTime<Utc>) -> Result<PeerHub> {
        let mut v = Violations::new();
        v.check("division_code", validate_division_code(&self.division_code));
        if self.division_code == own_division {
            v.add("division_code", "is this hub's own division code");
        }
        v.check("name", text::check(&self.name, true, 100, false));
        v.check("address", validate_address(&self.address));
        if !self.ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            v.add("ca_pem", "must hold the peer's CA certificate(s) in PEM");
        } else if self.ca_pem.len() > MAX_CA_PEM_BYTES {
            v.add("ca_pem", format!("is larger than {MAX_CA_PEM_BYTES} bytes"));
        } else {
            v.check("ca_pem", text::check(&self.ca_pem, true, MAX_CA_PEM_BYTES, true));
        }
        if self.relation.is_none() {
            v.add("relation", "must be parent, child or peer");
        }
        for (i, class) in self.exposure.classifications.iter().enumerate() {
            if class.is_empty() || class.len() > 12 || !class.bytes().all(|b| b.is_ascii_digit()) {
                v.add(format!("exposure.classifications[{i}]"), "must be up to 12 digits");
            }
        }
        if !self.exposure.classifications.is_empty() && !self.exposure.catalogue {
            v.add(
                "exposure.classifications",
                "narrows the exposed catalogue, which is not exposed",
            );
        }
        if self.exposure.catalogue && self.relation != Some(Relation::Parent) {
            v.add(
                "exposure.catalogue",
                "the catalogue is exposed upward only, to a parent (目录汇聚)",
            );
        }
        v.into_result()?;
        Ok(PeerHub {
            division_code: self.division_code,
            name: self.name,
            address: self.address,
            ca_pem: self.ca_pem,
            relation: self.relation.unwrap_or(Relation::Peer),
            exposure: self.exposure,
            catalogue_cursor: 0,
            added_by: added_by.to_string(),
            added_at: at,
        })
    }
}

/// 行政区划代码: six digits, not all zero.
pub fn validate_division_code(code: &str) -> std::result::Result<(), String> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be a 6-digit 行政区划代码".into());
    }
    if code == "000000" {
        return Err("000000 is no division".into());
    }
    Ok(())
}

fn validate_address(address: &str) -> std::result::Result<(), String> {
    text::check(address, true, 200, false)?;
    let rest = address
        .strip_prefix("https://")
        .ok_or("must be https://host:port (federation runs over mutual TLS)")?;
    let (host, port) = rest.rsplit_once(':').ok_or("must name the port: https://host:port")?;
    if host.is_empty() || host.contains(['/', ' ', '@', '?', '#']) {
        return Err("must be https://host:port".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("must end in a port number 1-65535".into()),
    }
}

/// Whether the division `inner` lies within `outer` (GB/T 2260: province 2 digits, city 2,
/// county 2; a code ending in 0000 is a province, in 00 a city). A division contains itself.
pub fn division_contains(outer: &str, inner: &str) -> bool {
    if validate_division_code(outer).is_err() || validate_division_code(inner).is_err() {
        return false;
    }
    // 100000: the nation (全国).
    if outer == "100000" {
        return true;
    }
    let significant = if outer.ends_with("0000") {
        2
    } else if outer.ends_with("00") {
        4
    } else {
        6
    };
    outer[..significant] == inner[..significant]
}

/// A catalogue entry that came to this hub through federation, or one of this hub's own as its
/// feed offers it upward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedEntry {
    /// The hub that holds the entry (its provider is a department there).
    pub origin_hub: String,
    /// The child it came through (the origin itself, or a hub between).
    pub via_hub: String,
    /// As the origin published it: published, or withdrawn (下线) since.
    pub entry: CatalogEntry,
}

/// One change of a hub's catalogue feed: the latest state of one entry, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueChange {
    /// Monotonic: a reader that has seen position N has seen every change up to N.
    pub position: u64,
    pub entry: FederatedEntry,
}

/// Whether a hub calling as `caller` may read this hub's catalogue feed: only a registered
/// parent to which the catalogue is exposed.
pub fn read_catalogue_feed(caller: &PeerHub) -> Result<()> {
    if caller.relation != Relation::Parent {
        return Err(Error::PermissionDenied(format!(
            "hub {} is registered here as a {}, not a parent: only a parent reads the catalogue this hub exposes",
            caller.division_code, caller.relation
        )));
    }
    if !caller.exposure.catalogue {
        return Err(Error::PermissionDenied(format!(
            "the catalogue is not exposed to hub {}",
            caller.division_code
        )));
    }
    Ok(())
}

/// Checks a change a child sent before it is applied here: the entry must come from a hub within
/// the child's division, never this hub, and be published or withdrawn.
pub fn accept_from_child(own_division: &str, child: &PeerHub, change: &CatalogueChange) -> Result<()> {
    let origin = &change.entry.origin_hub;
    let refuse = |why: String| {
        Err(Error::FailedPrecondition(format!(
            "hub {} sent an unacceptable catalogue change at position {}: {why}",
            child.division_code, change.position
        )))
    };
    if child.relation != Relation::Child {
        return refuse(format!("it is registered as a {}, not a child", child.relation));
    }
    if validate_division_code(origin).is_err() {
        return refuse(format!(
            "origin hub '{}' is no division code",
            text::shorten(origin, 20)
        ));
    }
    if origin == own_division {
        return refuse("it names this hub as the origin".into());
    }
    if !division_contains(&child.division_code, origin) {
        return refuse(format!("origin hub {origin} is outside the child's division"));
    }
    let entry = &change.entry.entry;
    if !matches!(entry.state, EntryState::Published | EntryState::Withdrawn) {
        return refuse(format!(
            "entry state {} is neither published nor withdrawn",
            entry.state.as_str()
        ));
    }
    if crate::catalogue::validate_resource_code(&entry.resource_code).is_err() {
        return refuse(format!(
            "'{}' is no resource code",
            text::shorten(&entry.resource_code, 40)
        ));
    }
    if change.position == 0 {
        return refuse("position 0".into());
    }
    Ok(())
}

/// Whether a registered peer hub may act here for `department`, a department served by the hub
/// `home_hub` (跨级交换: the hub that relays a department's call names the department and the hub
/// it belongs to). The peer is trusted only for what its place in the tree lets it vouch for: its
/// own departments; for a child, those of hubs within its division (it relays upward from
/// below); for a parent, those of hubs whose division contains its own (it relays downward from
/// above). The department's 统一社会信用代码 must name a division within its home hub's. What the
/// department may then read is decided here, under this hub's own rules and grants, as if it
/// called itself.
pub fn acts_for(peer: &PeerHub, department: &str, home_hub: &str) -> Result<()> {
    let refuse = |why: String| {
        Err(Error::PermissionDenied(format!(
            "hub {} cannot act here for department {}: {why}",
            peer.division_code,
            text::shorten(department, 20)
        )))
    };
    if crate::identifiers::validate_uscc(department).is_err() {
        return refuse("it is no 统一社会信用代码".into());
    }
    if validate_division_code(home_hub).is_err() {
        return refuse(format!("'{}' is no hub's division code", text::shorten(home_hub, 20)));
    }
    let division = department.get(2..8).unwrap_or_default();
    if !division_contains(home_hub, division) {
        return refuse(format!(
            "its division {division} is not within hub {home_hub}, which it is said to belong to"
        ));
    }
    let trusted = home_hub == peer.division_code
        || match peer.relation {
            Relation::Child => division_contains(&peer.division_code, home_hub),
            Relation::Parent => division_contains(home_hub, &peer.division_code),
            Relation::Peer => false,
        };
    if !trusted {
        return refuse(format!(
            "hub {home_hub} is not served through it (it is registered here as a {})",
            peer.relation
        ));
    }
    Ok(())
}

/// Of the published aggregated entries holding one resource code, the one a read is relayed for.
/// Codes are unique per hub, not across hubs: when several hubs hold the same code, the caller
/// must name the dataset as `<origin hub>:<resource code>` (see [`split_origin`]).
pub fn relay_target<'a>(
    entries: &'a [FederatedEntry],
    origin: Option<&str>,
    resource_code: &str,
) -> Result<Option<&'a FederatedEntry>> {
    let mut matching = entries
        .iter()
        .filter(|e| e.entry.state == EntryState::Published && origin.is_none_or(|o| o == e.origin_hub));
    let first = matching.next();
    if first.is_some() && matching.next().is_some() {
        return Err(Error::FailedPrecondition(format!(
            "several hubs hold {resource_code}: name it as <origin hub>:{resource_code}"
        )));
    }
    Ok(first)
}

/// A dataset named as `<origin hub>:<resource code>` split in two; a plain resource code as is.
pub fn split_origin(dataset: &str) -> (Option<&str>, &str) {
    match dataset.split_once(':') {
        Some((origin, code)) if validate_division_code(origin).is_ok() => (Some(origin), code),
        _ => (None, dataset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> PeerDraft {
        PeerDraft {
            division_code: "330110".into(),
            name: "余杭区数据共享平台".into(),
            address: "https://county.example:7443".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n".into(),
            relation: Some(Relation::Child),
            exposure: Exposure::default(),
        }
    }

    #[test]
    fn a_valid_peer_is_accepted() {
        let peer = draft().validate("330100", "admin:ops", Utc::now()).expect("valid");
        assert_eq!(peer.relation, Relation::Child);
        assert_eq!(peer.catalogue_cursor, 0);
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = PeerDraft {
            division_code: "33011".into(),
            name: String::new(),
            address: "http://x:1".into(),
            ca_pem: "nope".into(),
            relation: None,
            exposure: Exposure {
                catalogue: false,
                classifications: vec!["x".into()],
            },
        };
        let Err(Error::InvalidArgument(v)) = bad.validate("330100", "a", Utc::now()) else {
            panic!("refused")
        };
        let fields: Vec<_> = v.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "division_code",
                "name",
                "address",
                "ca_pem",
                "relation",
                "exposure.classifications[0]",
                "exposure.classifications"
            ]
        );
    }

    #[test]
    fn a_hub_is_not_its_own_peer_and_exposes_its_catalogue_upward_only() {
        let mut own = draft();
        own.division_code = "330100".into();
        assert!(own.validate("330100", "a", Utc::now()).is_err());
        let mut downward = draft();
        downward.exposure.catalogue = true;
        assert!(downward.validate("330100", "a", Utc::now()).is_err());
        let mut upward = draft();
        upward.relation = Some(Relation::Parent);
        upward.exposure.catalogue = true;
        assert!(upward.validate("330100", "a", Utc::now()).is_ok());
    }

    #[test]
    fn addresses_are_https_with_a_port() {
        assert!(validate_address("https://127.0.0.1:7443").is_ok());
        assert!(validate_address("https://[::1]:7443").is_ok());
        assert!(validate_address("https://h").is_err());
        assert!(validate_address("https://h:0").is_err());
        assert!(validate_address("https://h:99999").is_err());
        assert!(validate_address("https://u@h:1").is_err());
        assert!(validate_address("h:1").is_err());
    }

    #[test]
    fn divisions_contain_their_lower_levels() {
        assert!(division_contains("330000", "330110"));
        assert!(division_contains("330100", "330110"));
        assert!(division_contains("330110", "330110"));
        assert!(!division_contains("330110", "330100"));
        assert!(!division_contains("330100", "330200"));
        assert!(!division_contains("330000", "320100"));
        assert!(division_contains("100000", "320100"));
        assert!(!division_contains("33011x", "330110"));
    }

    #[test]
    fn exposure_narrows_by_classification() {
        let all = Exposure {
            catalogue: true,
            classifications: vec![],
        };
        assert!(all.exposes_class("102003"));
        let some = Exposure {
            catalogue: true,
            classifications: vec!["102".into()],
        };
        assert!(some.exposes_class("102003"));
        assert!(!some.exposes_class("201"));
        assert!(!Exposure::default().exposes_class("102"));
    }

    #[test]
    fn relations_parse_by_name_or_label() {
        for r in Relation::ALL {
            assert_eq!(Relation::parse(r.as_str()), Some(r));
            assert_eq!(Relation::parse(r.label()), Some(r));
        }
        assert_eq!(Relation::parse("sibling"), None);
    }

    #[test]
    fn only_a_parent_with_the_catalogue_exposed_reads_the_feed() {
        let mut peer = draft().validate("330100", "a", Utc::now()).expect("valid");
        assert!(matches!(read_catalogue_feed(&peer), Err(Error::PermissionDenied(_))));
        peer.relation = Relation::Parent;
        assert!(matches!(read_catalogue_feed(&peer), Err(Error::PermissionDenied(_))));
        peer.exposure.catalogue = true;
        assert!(read_catalogue_feed(&peer).is_ok());
    }

    #[test]
    fn a_child_sends_only_entries_from_within_its_division() {
        let child = draft().validate("330100", "a", Utc::now()).expect("valid");
        let at = Utc::now();
        let entry = CatalogEntry {
            resource_code: "102/000001".into(),
            provider_code: "11330110MB0001001X".into(),
            provider_name: "区市场监督管理局".into(),
            content: crate::catalogue::tests::draft().validate().expect("valid content"),
            state: EntryState::Published,
            version: 3,
            state_reason: String::new(),
            published_at: Some(at),
            created_at: at,
            updated_at: at,
        };
        let change = |origin: &str| CatalogueChange {
            position: 1,
            entry: FederatedEntry {
                origin_hub: origin.into(),
                via_hub: "330110".into(),
                entry: entry.clone(),
            },
        };
        assert!(accept_from_child("330100", &child, &change("330110")).is_ok());
        assert!(accept_from_child("330100", &child, &change("330100")).is_err());
        assert!(accept_from_child("330100", &child, &change("330200")).is_err());
        assert!(accept_from_child("330100", &child, &change("")).is_err());
        let mut parent = child.clone();
        parent.relation = Relation::Parent;
        assert!(accept_from_child("330100", &parent, &change("330110")).is_err());
    }

    fn registered(code: &str, relation: Relation) -> PeerHub {
        let mut peer = draft().validate("999999", "a", Utc::now()).expect("valid");
        peer.division_code = code.into();
        peer.relation = relation;
        peer
    }

    /// A government department's code in `division` (positions 3-8), its check character valid.
    fn department_in(division: &str) -> String {
        let first17 = format!("11{division}MB0001010");
        let check = crate::identifiers::uscc_check_char(&first17).expect("alphabet");
        format!("{first17}{check}")
    }

    #[test]
    fn a_peer_acts_only_for_departments_its_place_in_the_tree_vouches_for() {
        let province_dept = department_in("330000");
        let county_dept = department_in("330110");
        // The city, registered at the county as its parent, relays for the province above it.
        let city_as_parent = registered("330100", Relation::Parent);
        assert!(acts_for(&city_as_parent, &department_in("330100"), "330100").is_ok());
        assert!(acts_for(&city_as_parent, &province_dept, "330000").is_ok());
        // Not for another city's hub, nor for a department outside the hub it names.
        assert!(acts_for(&city_as_parent, &department_in("330200"), "330200").is_err());
        assert!(acts_for(&city_as_parent, &department_in("330200"), "330000").is_ok());
        assert!(acts_for(&city_as_parent, &department_in("320000"), "330000").is_err());
        // The city, registered at the province as its child, relays for hubs below it.
        let city_as_child = registered("330100", Relation::Child);
        assert!(acts_for(&city_as_child, &county_dept, "330110").is_ok());
        assert!(acts_for(&city_as_child, &province_dept, "330000").is_err());
        assert!(acts_for(&city_as_child, &department_in("330210"), "330210").is_err());
        // A hub of the same level, for its own only.
        let sibling = registered("330200", Relation::Peer);
        assert!(acts_for(&sibling, &department_in("330200"), "330200").is_ok());
        assert!(acts_for(&sibling, &province_dept, "330000").is_err());
        // Malformed names are refused, never trusted.
        assert!(acts_for(&city_as_parent, "11330000MB0001010", "330000").is_err());
        assert!(acts_for(&city_as_parent, &province_dept, "33").is_err());
        let Err(Error::PermissionDenied(why)) = acts_for(&city_as_child, &province_dept, "330000") else {
            panic!("refused")
        };
        assert!(why.contains("330100") && why.contains(&province_dept), "{why}");
    }

    #[test]
    fn a_relayed_read_goes_to_the_one_hub_holding_the_code() {
        let at = Utc::now();
        let entry = |origin: &str, state: EntryState| FederatedEntry {
            origin_hub: origin.into(),
            via_hub: origin.into(),
            entry: CatalogEntry {
                resource_code: "102/000001".into(),
                provider_code: "11330110MB0001001X".into(),
                provider_name: "区市场监督管理局".into(),
                content: crate::catalogue::tests::draft().validate().expect("valid content"),
                state,
                version: 1,
                state_reason: String::new(),
                published_at: Some(at),
                created_at: at,
                updated_at: at,
            },
        };
        let one = [
            entry("330110", EntryState::Published),
            entry("330120", EntryState::Withdrawn),
        ];
        let found = relay_target(&one, None, "102/000001").expect("one").expect("found");
        assert_eq!(found.origin_hub, "330110");
        let two = [
            entry("330110", EntryState::Published),
            entry("330120", EntryState::Published),
        ];
        assert!(matches!(
            relay_target(&two, None, "102/000001"),
            Err(Error::FailedPrecondition(_))
        ));
        let named = relay_target(&two, Some("330120"), "102/000001")
            .expect("named")
            .expect("found");
        assert_eq!(named.origin_hub, "330120");
        assert!(relay_target(&[], None, "102/000001").expect("none").is_none());
        assert_eq!(split_origin("330110:102/000001"), (Some("330110"), "102/000001"));
        assert_eq!(split_origin("102/000001"), (None, "102/000001"));
        assert_eq!(split_origin("x:102/000001"), (None, "x:102/000001"));
    }
}
