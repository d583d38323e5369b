"""Activities against the (fake) compute provider."""

from .apply_settings import apply_settings
from .check_health import check_health
from .create_vm import create_vm
from .delete_vm import delete_vm
from .snapshot_disk import snapshot_disk

__all__ = ["apply_settings", "check_health", "create_vm", "delete_vm", "snapshot_disk"]
