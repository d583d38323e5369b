"""The provisioning app's orchestrations. Each is deterministic: it only decides what
to do next from its input and the results history gives back; all real work happens
in activities."""

from . import apply_config
from .cleanup_resource import cleanup_resource
from .create_resource import create_resource
from .health_monitor import health_monitor

__all__ = ["apply_config", "cleanup_resource", "create_resource", "health_monitor"]
