//! Who may do what in the directory. Each function is one rule; the hub calls it before acting.

use crate::catalogue::CatalogEntry;
use crate::identity::Caller;
use crate::lifecycle::{EntryAction, EntryState};
use crate::{Error, Result};

/// Only the platform admin registers and manages departments.
pub fn manage_departments(caller: &Caller) -> Result<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(Error::PermissionDenied(
            "only the platform admin manages departments".into(),
        ))
    }
}

/// Only a department compiles catalogue entries, as their provider (提供方).
pub fn create_entry(caller: &Caller) -> Result<&str> {
    caller.department().ok_or_else(|| {
        Error::PermissionDenied("catalogue entries are compiled by their providing department, not the admin".into())
    })
}

/// Which entries a caller may see at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryVisibility {
    /// The admin reviews the catalogue and sees every entry.
    All,
    /// A department sees published entries and its own in every state.
    PublishedOrOwnedBy(String),
}

pub fn entry_visibility(caller: &Caller) -> EntryVisibility {
    match caller {
        Caller::Admin(_) => EntryVisibility::All,
        Caller::Department(code) => EntryVisibility::PublishedOrOwnedBy(code.clone()),
        // Owns nothing: sees what is published.
        Caller::Evaluator(_) => EntryVisibility::PublishedOrOwnedBy(String::new()),
    }
}

impl EntryVisibility {
    pub fn allows(&self, provider_code: &str, state: EntryState) -> bool {
        match self {
            EntryVisibility::All => true,
            EntryVisibility::PublishedOrOwnedBy(code) => state == EntryState::Published || provider_code == code,
        }
    }
}

/// Whether the caller may read this entry (at its current state). An entry the caller may not see
/// is reported as not found, so that its existence is not disclosed.
pub fn read_entry(caller: &Caller, entry: &CatalogEntry) -> Result<()> {
    if entry_visibility(caller).allows(&entry.provider_code, entry.state) {
        Ok(())
    } else {
        Err(Error::NotFound(format!("catalogue entry {}", entry.resource_code)))
    }
}

/// Whether the caller may read the history and past versions of this entry: the provider and the
/// admin always; others only while it is published.
pub fn read_history(caller: &Caller, entry: &CatalogEntry) -> Result<()> {
    read_entry(caller, entry)
}

/// Whether the caller may apply `action` to an entry it can see. The lifecycle decides separately
/// whether the action fits the entry's state.
pub fn act_on_entry(caller: &Caller, entry: &CatalogEntry, action: EntryAction) -> Result<()> {
    read_entry(caller, entry)?;
    let is_provider = caller.department() == Some(entry.provider_code.as_str());
    let allowed = match action {
        EntryAction::Create | EntryAction::Update | EntryAction::Submit => is_provider,
        EntryAction::Publish | EntryAction::Return => caller.is_admin(),
        EntryAction::Withdraw => is_provider || caller.is_admin(),
    };
    if allowed {
        return Ok(());
    }
    let who = match action {
        EntryAction::Publish | EntryAction::Return => "only the platform admin reviews catalogue entries",
        EntryAction::Withdraw => "only the provider or the admin withdraws an entry",
        _ => "only the providing department changes its entry",
    };
    Err(Error::PermissionDenied(who.into()))
}

/// Which schema describes an entry's records is decided by its provider (or the admin).
pub fn bind_schema(caller: &Caller, entry: &CatalogEntry) -> Result<()> {
    read_entry(caller, entry)?;
    if caller.is_admin() || caller.department() == Some(entry.provider_code.as_str()) {
        Ok(())
    } else {
        Err(Error::PermissionDenied(
            "only the provider or the admin binds a schema to an entry".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::tests::draft;
    use chrono::Utc;

    const OWNER: &str = "11100000000013127D";
    const OTHER: &str = "111100000000000011";

    fn entry(state: EntryState) -> CatalogEntry {
        CatalogEntry {
            resource_code: "102/000001".into(),
            provider_code: OWNER.into(),
            provider_name: "示例局".into(),
            content: draft().validate().unwrap(),
            state,
            version: 1,
            state_reason: String::new(),
            published_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn admin() -> Caller {
        Caller::Admin("ops".into())
    }

    #[test]
    fn only_the_admin_manages_departments() {
        assert!(manage_departments(&admin()).is_ok());
        assert!(matches!(
            manage_departments(&Caller::Department(OWNER.into())),
            Err(Error::PermissionDenied(_))
        ));
    }

    #[test]
    fn others_see_only_published_entries() {
        let other = Caller::Department(OTHER.into());
        let owner = Caller::Department(OWNER.into());
        for &state in EntryState::ALL {
            let e = entry(state);
            assert!(read_entry(&owner, &e).is_ok());
            assert!(read_entry(&admin(), &e).is_ok());
            assert_eq!(
                read_entry(&other, &e).is_ok(),
                state == EntryState::Published,
                "{state:?}"
            );
        }
        assert!(matches!(
            read_entry(&other, &entry(EntryState::Draft)),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn roles_per_action() {
        let owner = Caller::Department(OWNER.into());
        let other = Caller::Department(OTHER.into());
        let pending = entry(EntryState::PendingReview);
        let published = entry(EntryState::Published);
        assert!(act_on_entry(&owner, &pending, EntryAction::Submit).is_ok());
        assert!(act_on_entry(&owner, &pending, EntryAction::Publish).is_err());
        assert!(act_on_entry(&admin(), &pending, EntryAction::Publish).is_ok());
        assert!(act_on_entry(&admin(), &pending, EntryAction::Update).is_err());
        assert!(act_on_entry(&admin(), &published, EntryAction::Withdraw).is_ok());
        assert!(act_on_entry(&owner, &published, EntryAction::Withdraw).is_ok());
        assert!(matches!(
            act_on_entry(&other, &published, EntryAction::Withdraw),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            act_on_entry(&other, &published, EntryAction::Update),
            Err(Error::PermissionDenied(_))
        ));
        // A draft of another department is not even disclosed.
        assert!(matches!(
            act_on_entry(&other, &pending, EntryAction::Update),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn the_provider_or_the_admin_binds_a_schema() {
        let published = entry(EntryState::Published);
        assert!(bind_schema(&Caller::Department(OWNER.into()), &published).is_ok());
        assert!(bind_schema(&admin(), &published).is_ok());
        assert!(matches!(
            bind_schema(&Caller::Department(OTHER.into()), &published),
            Err(Error::PermissionDenied(_))
        ));
    }

    #[test]
    fn departments_cannot_be_created_by_the_admin_as_provider() {
        assert!(create_entry(&admin()).is_err());
        assert_eq!(create_entry(&Caller::Department(OWNER.into())), Ok(OWNER));
    }
}
