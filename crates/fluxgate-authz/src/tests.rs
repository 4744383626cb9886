use super::*;

fn subject(role: Role) -> Subject {
    Subject {
        user_id: UserId::generate(),
        role,
        active: true,
        must_change_password: false,
    }
}

#[test]
fn only_team_admins_manage_users_and_settings() {
    let other = Resource::User(UserId::generate());
    for action in [
        Action::CreateUser,
        Action::UpdateUser,
        Action::ChangeUserRole,
        Action::DeactivateUser,
        Action::ReactivateUser,
        Action::DeleteUser,
        Action::ViewUser,
    ] {
        for role in Role::ALL {
            let d = decide(&subject(role), action, other);
            assert_eq!(d.allowed, role == Role::TeamAdmin, "{action:?} by {role}");
        }
    }
    for action in [
        Action::ListUsers,
        Action::ReadSettings,
        Action::UpdateSettings,
    ] {
        let d = decide(&subject(Role::Approver), action, Resource::Org);
        assert_eq!(
            d.reason,
            Reason::RoleRequired {
                required: Role::TeamAdmin,
                held: Role::Approver
            }
        );
    }
}

#[test]
fn admins_cannot_deactivate_delete_or_demote_themselves() {
    let admin = subject(Role::TeamAdmin);
    let me = Resource::User(admin.user_id);
    for action in [
        Action::DeactivateUser,
        Action::DeleteUser,
        Action::ChangeUserRole,
    ] {
        let d = decide(&admin, action, me);
        assert_eq!(d, Decision::deny(Reason::SelfProtected { action }));
    }
    assert!(decide(&admin, Action::UpdateUser, me).allowed);
}

#[test]
fn everyone_may_view_themselves() {
    let s = subject(Role::Requester);
    let d = decide(&s, Action::ViewUser, Resource::User(s.user_id));
    assert_eq!(d, Decision::allow(Reason::OwnAccount));
}

#[test]
fn inactive_subjects_hold_nothing() {
    let mut s = subject(Role::TeamAdmin);
    s.active = false;
    for action in [Action::ManageOwnSession, Action::ListUsers] {
        assert_eq!(
            decide(&s, action, Resource::Org),
            Decision::deny(Reason::Inactive)
        );
    }
}

#[test]
fn temporary_password_allows_only_own_session() {
    let mut s = subject(Role::TeamAdmin);
    s.must_change_password = true;
    let me = Resource::User(s.user_id);
    assert!(decide(&s, Action::ManageOwnSession, me).allowed);
    assert_eq!(
        decide(&s, Action::ListUsers, Resource::Org),
        Decision::deny(Reason::PasswordChangeRequired)
    );
    assert!(!decide(&s, Action::ViewUser, me).allowed);
}
