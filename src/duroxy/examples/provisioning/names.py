"""Every orchestration, activity and event name of the provisioning app, in one place.

Names follow the ``"{package}::{type}::{name}"`` convention. They are stored in
history and in queued work, so a name, once deployed, is never changed: rename the
Python constant if you like, never its value.
"""

from __future__ import annotations

from typing import Final

PACKAGE: Final = "provisioning"


class orchestrations:
    """Orchestration names."""

    #: Reserve, create (with retries), mark running, start the health monitor.
    #: Input :class:`~.types.CreateResourceInput`, output :class:`~.types.CreateResourceOutput`.
    CREATE_RESOURCE: Final = "provisioning::orchestration::create-resource"
    #: Undo a partial creation. Input :class:`~.types.CleanupInput`.
    CLEANUP_RESOURCE: Final = "provisioning::orchestration::cleanup-resource"
    #: Eternal health loop (continue-as-new) that stops on :data:`events.INSTANCE_DELETED`.
    HEALTH_MONITOR: Final = "provisioning::orchestration::health-monitor"
    #: Versioned: 1.0.0, 1.0.1 and 1.0.2 are registered side by side.
    APPLY_CONFIG: Final = "provisioning::orchestration::apply-config"


class activities:
    """Activity names, grouped by the system they talk to."""

    # cms: the control plane's own metadata store
    RESERVE_RESOURCE: Final = "provisioning::activity::reserve-resource"
    UPDATE_STATUS: Final = "provisioning::activity::update-status"
    RELEASE_RESERVATION: Final = "provisioning::activity::release-reservation"
    RECORD_HEALTH: Final = "provisioning::activity::record-health"
    VALIDATE_CONFIG: Final = "provisioning::activity::validate-config"
    # cloud: the (fake) compute provider
    CREATE_VM: Final = "provisioning::activity::create-vm"
    DELETE_VM: Final = "provisioning::activity::delete-vm"
    CHECK_HEALTH: Final = "provisioning::activity::check-health"
    SNAPSHOT_DISK: Final = "provisioning::activity::snapshot-disk"
    APPLY_SETTINGS: Final = "provisioning::activity::apply-settings"


class events:
    """External event names (``Client.raise_event``)."""

    #: Sent to a health monitor when its resource is deleted; ends the monitor.
    INSTANCE_DELETED: Final = "InstanceDeleted"


def monitor_instance_id(resource_name: str) -> str:
    """The instance id of a resource's health monitor (one per resource)."""
    return f"monitor::{resource_name}"
