from wagtail.permission_policies import ModelPermissionPolicy


class RefusingPolicy(ModelPermissionPolicy):
    """Model permissions, except for actions nobody may take through the admin.

    For rows that change only through services: the outbox (sent by tasks), subscribers
    (created by opt-in forms), ledgers.
    """

    def __init__(self, model, *, refused: set[str], **kwargs):
        super().__init__(model, **kwargs)
        self.refused = frozenset(refused)

    def user_has_permission(self, user, action):
        if action in self.refused:
            return False
        return super().user_has_permission(user, action)

    def user_has_any_permission(self, user, actions):
        return any(self.user_has_permission(user, action) for action in actions)
