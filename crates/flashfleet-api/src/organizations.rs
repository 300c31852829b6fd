//! Organizations (openwisp-users' `/api/v1/users/organization/`).

use flashfleet_models::{OrganizationId, Scope};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::Input;
use crate::state::ApiState;

/// The organization `id` named by the body field `field`, if the caller may put objects in it
/// (it manages it, or is a superuser); otherwise records DRF's "Invalid pk" error on `field`
/// (the organization is not among the choices, whether or not it exists) and returns `None`.
pub(crate) async fn writable_organization(
    state: &ApiState,
    caller: &Caller,
    input: &mut Input,
    field: &str,
    id: OrganizationId,
) -> Result<Option<OrganizationId>, ApiError> {
    let scope = caller.write_scope();
    let found = match &scope {
        Scope::Organizations { ids, .. } if !ids.contains(&id) => None,
        _ => state.repository().organization(&scope, id).await?,
    };
    match found {
        Some(organization) if organization.is_active => Ok(Some(organization.id)),
        _ => {
            input.error(
                field,
                format!("Invalid pk \"{id}\" - object does not exist."),
            );
            Ok(None)
        }
    }
}
