//! Government departments (政务部门) connected to the hub.

use chrono::{DateTime, Utc};

use crate::error::{Result, Violations};
use crate::identifiers::{validate_division_code, validate_uscc};
use crate::text;

/// A department's registration as the admin enters it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepartmentProfile {
    /// 统一社会信用代码: the department's identity, also in its certificate.
    pub code: String,
    pub name: String,
    /// 行政区划代码.
    pub division_code: String,
    pub contact: String,
}

impl DepartmentProfile {
    pub fn validate(&self) -> Result<()> {
        let mut v = Violations::new();
        v.check("code", validate_uscc(&self.code));
        v.check("name", text::check(&self.name, true, 200, false));
        v.check("division_code", validate_division_code(&self.division_code));
        v.check("contact", text::check(&self.contact, false, 200, false));
        v.into_result()
    }
}

/// A registered department.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Department {
    pub profile: DepartmentProfile,
    /// A deactivated department's certificates are refused.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Department {
    pub fn code(&self) -> &str {
        &self.profile.code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn profile() -> DepartmentProfile {
        DepartmentProfile {
            code: "11100000000013127D".into(),
            name: "示例局".into(),
            division_code: "110000".into(),
            contact: "010-12345678".into(),
        }
    }

    #[test]
    fn a_valid_profile_passes() {
        assert_eq!(profile().validate(), Ok(()));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let p = DepartmentProfile {
            code: "123".into(),
            name: "".into(),
            division_code: "x".into(),
            ..profile()
        };
        let Err(Error::InvalidArgument(violations)) = p.validate() else {
            panic!("expected InvalidArgument")
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["code", "name", "division_code"]);
    }
}
