//! The lifecycle of a catalogue entry: 待提交 → 待审核 → 已发布 or 已退回 → 下线.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// 待提交
    Draft,
    /// 待审核
    PendingReview,
    /// 已发布
    Published,
    /// 已退回
    Returned,
    /// 下线
    Withdrawn,
}

/// A change to an entry. Each one makes a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryAction {
    Create,
    Update,
    Submit,
    Publish,
    Return,
    Withdraw,
}

impl EntryState {
    pub const ALL: &'static [EntryState] = &[
        EntryState::Draft,
        EntryState::PendingReview,
        EntryState::Published,
        EntryState::Returned,
        EntryState::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Draft => "draft",
            EntryState::PendingReview => "pending_review",
            EntryState::Published => "published",
            EntryState::Returned => "returned",
            EntryState::Withdrawn => "withdrawn",
        }
    }

    /// The Chinese term shown on government platforms.
    pub fn label(self) -> &'static str {
        match self {
            EntryState::Draft => "待提交",
            EntryState::PendingReview => "待审核",
            EntryState::Published => "已发布",
            EntryState::Returned => "已退回",
            EntryState::Withdrawn => "下线",
        }
    }

    /// Reads the code or the Chinese term.
    pub fn parse(text: &str) -> Option<Self> {
        EntryState::ALL
            .iter()
            .copied()
            .find(|s| s.as_str() == text || s.label() == text)
    }

    /// The state after `action`, or FAILED_PRECONDITION when the action is not allowed now.
    pub fn apply(self, action: EntryAction) -> Result<EntryState> {
        use EntryAction as A;
        use EntryState as S;
        let next = match (self, action) {
            // Revising a returned or withdrawn entry starts a new draft of it.
            (S::Draft | S::Returned | S::Withdrawn, A::Update) => S::Draft,
            (S::Draft | S::Returned, A::Submit) => S::PendingReview,
            (S::PendingReview, A::Publish) => S::Published,
            (S::PendingReview, A::Return) => S::Returned,
            (S::Draft | S::PendingReview | S::Published | S::Returned, A::Withdraw) => S::Withdrawn,
            (state, action) => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot {} an entry that is {}",
                    action.as_str(),
                    state.describe()
                )));
            }
        };
        Ok(next)
    }

    fn describe(self) -> &'static str {
        match self {
            EntryState::Draft => "a draft (待提交)",
            EntryState::PendingReview => "pending review (待审核)",
            EntryState::Published => "published (已发布)",
            EntryState::Returned => "returned (已退回)",
            EntryState::Withdrawn => "withdrawn (下线)",
        }
    }
}

impl EntryAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryAction::Create => "create",
            EntryAction::Update => "update",
            EntryAction::Submit => "submit",
            EntryAction::Publish => "publish",
            EntryAction::Return => "return",
            EntryAction::Withdraw => "withdraw",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Create,
            Self::Update,
            Self::Submit,
            Self::Publish,
            Self::Return,
            Self::Withdraw,
        ]
        .into_iter()
        .find(|a| a.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::EntryAction as A;
    use super::EntryState as S;
    use super::*;

    #[test]
    fn the_review_path() {
        let s = S::Draft.apply(A::Submit).unwrap();
        assert_eq!(s, S::PendingReview);
        assert_eq!(s.apply(A::Publish), Ok(S::Published));
        assert_eq!(s.apply(A::Return), Ok(S::Returned));
        assert_eq!(S::Returned.apply(A::Update), Ok(S::Draft));
        assert_eq!(S::Returned.apply(A::Submit), Ok(S::PendingReview));
        assert_eq!(S::Published.apply(A::Withdraw), Ok(S::Withdrawn));
        assert_eq!(S::Withdrawn.apply(A::Update), Ok(S::Draft));
    }

    #[test]
    fn every_other_transition_is_refused() {
        let allowed = [
            (S::Draft, A::Update),
            (S::Returned, A::Update),
            (S::Withdrawn, A::Update),
            (S::Draft, A::Submit),
            (S::Returned, A::Submit),
            (S::PendingReview, A::Publish),
            (S::PendingReview, A::Return),
            (S::Draft, A::Withdraw),
            (S::PendingReview, A::Withdraw),
            (S::Published, A::Withdraw),
            (S::Returned, A::Withdraw),
        ];
        for &state in S::ALL {
            for action in [A::Create, A::Update, A::Submit, A::Publish, A::Return, A::Withdraw] {
                let result = state.apply(action);
                if allowed.contains(&(state, action)) {
                    assert!(result.is_ok(), "{state:?} {action:?}");
                } else {
                    assert!(
                        matches!(result, Err(Error::FailedPrecondition(_))),
                        "{state:?} {action:?} gave {result:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_refusal_says_why() {
        let Err(Error::FailedPrecondition(msg)) = S::Published.apply(A::Publish) else {
            panic!()
        };
        assert_eq!(msg, "cannot publish an entry that is published (已发布)");
    }

    #[test]
    fn states_round_trip_through_text() {
        for &s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
    }
}
