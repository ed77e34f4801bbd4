//! Who is calling: taken from the client certificate's SAN URI, never from the request.

use std::fmt;

pub const DEPARTMENT_URI_PREFIX: &str = "urn:xinqiao:dept:";
pub const ADMIN_URI_PREFIX: &str = "urn:xinqiao:admin:";
pub const EVALUATOR_URI_PREFIX: &str = "urn:xinqiao:evaluator:";
pub const HUB_URI_PREFIX: &str = "urn:xinqiao:hub:";

/// The identity a client certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A department, by its 统一社会信用代码.
    Department(String),
    /// The platform admin, by a name for the audit trail.
    Admin(String),
    /// An evaluator (评价方): reads the sharing scorecard of every department, nothing else.
    Evaluator(String),
    /// Another Xinqiao hub (平台级联), by its 行政区划代码: only the federation service lets one
    /// in, and only when it is registered as a peer.
    Hub(String),
}

impl Principal {
    /// Reads an identity URI (`urn:xinqiao:dept:<USCC>` or `urn:xinqiao:admin:<name>`).
    pub fn from_uri(uri: &str) -> Option<Principal> {
        if let Some(code) = uri.strip_prefix(DEPARTMENT_URI_PREFIX) {
            (!code.is_empty()).then(|| Principal::Department(code.to_string()))
        } else if let Some(name) = uri.strip_prefix(ADMIN_URI_PREFIX) {
            (!name.is_empty()).then(|| Principal::Admin(name.to_string()))
        } else if let Some(name) = uri.strip_prefix(EVALUATOR_URI_PREFIX) {
            (!name.is_empty()).then(|| Principal::Evaluator(name.to_string()))
        } else if let Some(code) = uri.strip_prefix(HUB_URI_PREFIX) {
            crate::federation::validate_division_code(code)
                .is_ok()
                .then(|| Principal::Hub(code.to_string()))
        } else {
            None
        }
    }

    /// Picks the one xinqiao identity among a certificate's SAN URIs. A certificate that names
    /// several identities is ambiguous and names none.
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Option<Principal> {
        let mut found = uris.into_iter().filter_map(Principal::from_uri);
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }

    pub fn uri(&self) -> String {
        match self {
            Principal::Department(code) => format!("{DEPARTMENT_URI_PREFIX}{code}"),
            Principal::Admin(name) => format!("{ADMIN_URI_PREFIX}{name}"),
            Principal::Evaluator(name) => format!("{EVALUATOR_URI_PREFIX}{name}"),
            Principal::Hub(code) => format!("{HUB_URI_PREFIX}{code}"),
        }
    }
}

impl fmt::Display for Principal {
    /// The actor as written in histories and the audit trail.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Department(code) => write!(f, "{code}"),
            Principal::Admin(name) => write!(f, "admin:{name}"),
            Principal::Evaluator(name) => write!(f, "evaluator:{name}"),
            Principal::Hub(code) => write!(f, "hub:{code}"),
        }
    }
}

/// An authenticated caller whose department, if any, is registered and active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin(String),
    Department(String),
    /// 评价方: only the evaluation service lets one in (see the hub's `Authenticator`).
    Evaluator(String),
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin(_))
    }

    pub fn is_evaluator(&self) -> bool {
        matches!(self, Caller::Evaluator(_))
    }

    /// The caller's department code, if it is a department.
    pub fn department(&self) -> Option<&str> {
        match self {
            Caller::Department(code) => Some(code),
            Caller::Admin(_) | Caller::Evaluator(_) => None,
        }
    }

    pub fn actor(&self) -> String {
        match self {
            Caller::Admin(name) => format!("admin:{name}"),
            Caller::Department(code) => code.clone(),
            Caller::Evaluator(name) => format!("evaluator:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_department_and_admin_uris() {
        assert_eq!(
            Principal::from_uri("urn:xinqiao:dept:11100000000013127D"),
            Some(Principal::Department("11100000000013127D".into()))
        );
        assert_eq!(
            Principal::from_uri("urn:xinqiao:admin:ops"),
            Some(Principal::Admin("ops".into()))
        );
        assert_eq!(Principal::from_uri("urn:xinqiao:dept:"), None);
        assert_eq!(
            Principal::from_uri("urn:xinqiao:evaluator:audit-office"),
            Some(Principal::Evaluator("audit-office".into()))
        );
        assert_eq!(Principal::from_uri("urn:xinqiao:evaluator:"), None);
        assert_eq!(Principal::from_uri("https://example.org"), None);
        assert_eq!(
            Principal::from_uri("urn:xinqiao:hub:330100"),
            Some(Principal::Hub("330100".into()))
        );
        assert_eq!(Principal::from_uri("urn:xinqiao:hub:3301"), None);
        assert_eq!(Principal::from_uri("urn:xinqiao:hub:000000"), None);
        assert_eq!(Principal::Hub("330100".into()).to_string(), "hub:330100");
    }

    #[test]
    fn ambiguous_certificates_name_nobody() {
        let uris = ["urn:xinqiao:dept:11100000000013127D", "urn:xinqiao:admin:ops"];
        assert_eq!(Principal::from_uris(uris), None);
        assert_eq!(
            Principal::from_uris(["spiffe://x", "urn:xinqiao:admin:ops"]),
            Some(Principal::Admin("ops".into()))
        );
    }

    #[test]
    fn round_trips_through_its_uri() {
        let p = Principal::Department("11100000000013127D".into());
        assert_eq!(Principal::from_uri(&p.uri()), Some(p));
    }
}
