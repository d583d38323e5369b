"""Activities against the control-plane metadata store ("cms")."""

from .record_health import record_health
from .release_reservation import release_reservation
from .reserve_resource import reserve_resource
from .update_status import update_status
from .validate_config import validate_config

__all__ = [
    "record_health",
    "release_reservation",
    "reserve_resource",
    "update_status",
    "validate_config",
]
