"""Every setting of a process, read from the environment (``load``); see .env.example."""

from infrastructure.settings.eventstore import CONNECT_PARAMS, eventstore_env
from infrastructure.settings.groups import (
    HealthRules,
    Limits,
    NotificationSettings,
    TokenRules,
    jwt_algorithm,
    notification_settings,
    queue_settings,
    smtp_starttls,
)
from infrastructure.settings.model import (
    Settings,
    check_jwt_secret,
    load,
)
from infrastructure.settings.values import SettingsError

__all__ = [
    "CONNECT_PARAMS",
    "HealthRules",
    "Limits",
    "NotificationSettings",
    "Settings",
    "SettingsError",
    "TokenRules",
    "check_jwt_secret",
    "eventstore_env",
    "jwt_algorithm",
    "load",
    "notification_settings",
    "queue_settings",
    "smtp_starttls",
]
