//! Listing users for the operator (`ListUsers`, `chaff users`): who has
//! anything stored, with their learn counts, a page at a time.

use super::Engine;
use crate::error::Error;
use crate::types::UserId;

/// Default users per page.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most users per page: each listed user costs a model read when its
/// model is not in memory, so a page stays a bounded amount of work.
pub const MAX_PAGE_SIZE: usize = 1_000;

/// One user as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserListing {
    pub user: UserId,
    pub spam_learned: u64,
    pub ham_learned: u64,
    /// Distinct tokens in the user's model.
    pub tokens: u64,
    /// The newest kept Score decision (ms since the Unix epoch): the only
    /// activity time stored (clicks are not timed).
    pub last_scored_ms: Option<u64>,
}

/// A page of users in the store's key order (the id's length, then its
/// bytes), and where the next page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsersPage {
    pub users: Vec<UserListing>,
    /// The last user of this page when more follow: pass it as `after` for
    /// the next page. `None` on the last page.
    pub next_after: Option<UserId>,
}

impl Engine {
    /// Users with anything stored (a model, clicks, settings, lists, kept
    /// decisions or a shared part) whose id starts with `prefix`, after
    /// `after`, at most `page_size` (1..=[`MAX_PAGE_SIZE`]).
    ///
    /// Counts come from the model in memory when it is there, else from
    /// disk without putting the model in memory, so listing every user
    /// neither evicts the models scoring needs nor counts as cache misses.
    pub fn list_users(
        &self,
        prefix: &str,
        after: Option<&UserId>,
        page_size: usize,
    ) -> Result<UsersPage, Error> {
        self.needs(crate::store::Aggregate::Users)?;
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let mut ids = self.store.list_users(prefix, after, page_size + 1)?;
        let more = ids.len() > page_size;
        ids.truncate(page_size);
        let mut users = Vec::with_capacity(ids.len());
        for user in ids {
            let resident = self.users.read().get(&user).cloned();
            let (spam_learned, ham_learned, tokens) = match resident {
                Some(slot) => {
                    let m = slot.model.read();
                    (m.spam_learned(), m.ham_learned(), m.token_count() as u64)
                }
                None => match self.store.load_model(&user)? {
                    Some(l) => (
                        l.model.spam_learned(),
                        l.model.ham_learned(),
                        l.model.token_count() as u64,
                    ),
                    None => (0, 0, 0),
                },
            };
            users.push(UserListing {
                last_scored_ms: self.store.last_decision_ms(&user)?,
                user,
                spam_learned,
                ham_learned,
                tokens,
            });
        }
        let next_after = more.then(|| users.last().map(|u| u.user.clone())).flatten();
        Ok(UsersPage { users, next_after })
    }
}
