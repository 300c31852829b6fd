//! Who may see and change what: roles in organizations, and the scope of a caller's queries.
//!
//! The rules follow upstream §6:
//! - a superuser may do everything, everywhere, including shared (organization-less) objects;
//! - an organization's owner or manager may read and change that organization's objects, and
//!   read (never change) shared objects;
//! - a member may read the objects of the organization, like upstream's "Operator" group
//!   (view-only); upstream gives members who manage nothing a 403 on every endpoint, flashfleet
//!   gives them read access instead, because an operator watching upgrades needs it.
//!
//! An object outside the caller's scope is reported as absent (an API answers 404, never 403),
//! so its existence is not confirmed.

use serde::{Deserialize, Serialize};

use crate::id::{OrganizationId, UserId};

/// A user's role in one organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// The owner: a manager who cannot be removed by other managers.
    Owner,
    /// A manager (openwisp-users `is_admin`): reads and changes the organization's objects.
    Manager,
    /// A member: reads the organization's objects.
    Member,
}

impl Role {
    /// Its name as stored and serialized.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Manager => "manager",
            Role::Member => "member",
        }
    }

    /// Whether this role may change the organization's objects.
    pub fn can_manage(&self) -> bool {
        matches!(self, Role::Owner | Role::Manager)
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "owner" => Ok(Role::Owner),
            "manager" => Ok(Role::Manager),
            "member" => Ok(Role::Member),
            other => Err(format!("unknown role `{other}`")),
        }
    }
}

/// An authenticated caller: the user and its roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The user.
    pub user_id: UserId,
    /// The username, for logs.
    pub username: String,
    /// Whether the user is a superuser.
    pub is_superuser: bool,
    /// Every active organization the user belongs to, with the role there.
    pub memberships: Vec<(OrganizationId, Role)>,
}

impl Actor {
    /// The role in `organization_id`, if any.
    pub fn role_in(&self, organization_id: OrganizationId) -> Option<Role> {
        self.memberships
            .iter()
            .find(|(member_of, _)| *member_of == organization_id)
            .map(|(_, role)| *role)
    }

    /// The organizations this actor manages (owner or manager).
    pub fn managed_organizations(&self) -> Vec<OrganizationId> {
        self.memberships
            .iter()
            .filter(|(_, role)| role.can_manage())
            .map(|(organization_id, _)| *organization_id)
            .collect()
    }

    /// Whether the actor may see an object of `organization` (`None`: a shared object).
    pub fn can_view(&self, organization: Option<OrganizationId>) -> bool {
        if self.is_superuser {
            return true;
        }
        match organization {
            Some(organization_id) => self.role_in(organization_id).is_some(),
            None => !self.memberships.is_empty(),
        }
    }

    /// Whether the actor may create, change or delete an object of `organization` (`None`: a
    /// shared object, which only superusers change).
    pub fn can_change(&self, organization: Option<OrganizationId>) -> bool {
        if self.is_superuser {
            return true;
        }
        match organization {
            Some(organization_id) => self
                .role_in(organization_id)
                .is_some_and(|role| role.can_manage()),
            None => false,
        }
    }

    /// The scope of this actor's read queries.
    pub fn read_scope(&self) -> Scope {
        if self.is_superuser {
            return Scope::All;
        }
        Scope::Organizations {
            ids: self
                .memberships
                .iter()
                .map(|(organization_id, _)| *organization_id)
                .collect(),
            include_shared: !self.memberships.is_empty(),
        }
    }

    /// The scope of objects this actor may change.
    pub fn write_scope(&self) -> Scope {
        if self.is_superuser {
            return Scope::All;
        }
        Scope::Organizations {
            ids: self.managed_organizations(),
            include_shared: false,
        }
    }
}

/// Which organizations a query may return objects of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every organization, and shared objects (superusers, the engine).
    All,
    /// Only these organizations, plus shared objects when `include_shared`.
    Organizations {
        /// The organizations.
        ids: Vec<OrganizationId>,
        /// Whether objects without organization (shared categories and builds) are included.
        include_shared: bool,
    },
}

impl Scope {
    /// Whether an object of `organization` (`None`: shared) is in this scope.
    pub fn contains(&self, organization: Option<OrganizationId>) -> bool {
        match (self, organization) {
            (Scope::All, _) => true,
            (Scope::Organizations { ids, .. }, Some(organization_id)) => {
                ids.contains(&organization_id)
            }
            (Scope::Organizations { include_shared, .. }, None) => *include_shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(is_superuser: bool, memberships: Vec<(OrganizationId, Role)>) -> Actor {
        Actor {
            user_id: UserId::new(),
            username: "u".into(),
            is_superuser,
            memberships,
        }
    }

    #[test]
    fn a_superuser_sees_and_changes_everything() {
        let superuser = actor(true, vec![]);
        assert!(superuser.can_view(None));
        assert!(superuser.can_change(None));
        assert!(superuser.can_change(Some(OrganizationId::new())));
        assert_eq!(superuser.read_scope(), Scope::All);
    }

    #[test]
    fn a_manager_changes_its_organization_and_only_reads_shared_objects() {
        let own = OrganizationId::new();
        let other = OrganizationId::new();
        let manager = actor(false, vec![(own, Role::Manager)]);
        assert!(manager.can_view(Some(own)) && manager.can_change(Some(own)));
        assert!(!manager.can_view(Some(other)) && !manager.can_change(Some(other)));
        assert!(manager.can_view(None));
        assert!(!manager.can_change(None));
        assert!(manager.read_scope().contains(None));
        assert!(!manager.write_scope().contains(None));
        assert!(!manager.read_scope().contains(Some(other)));
    }

    #[test]
    fn a_member_reads_but_does_not_change() {
        let own = OrganizationId::new();
        let member = actor(false, vec![(own, Role::Member)]);
        assert!(member.can_view(Some(own)));
        assert!(!member.can_change(Some(own)));
        assert!(!member.write_scope().contains(Some(own)));
    }

    #[test]
    fn a_user_without_organizations_sees_nothing_not_even_shared_objects() {
        let nobody = actor(false, vec![]);
        assert!(!nobody.can_view(None));
        assert!(!nobody.read_scope().contains(None));
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::Owner, Role::Manager, Role::Member] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("admin".parse::<Role>().is_err());
    }
}
