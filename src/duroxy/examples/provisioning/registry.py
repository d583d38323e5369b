"""The provisioning app's registries: every activity and orchestration by name.

Run it on a worker with ``duroxy worker duroxy.examples.provisioning.registry``.
"""

from __future__ import annotations

from duroxy import ActivityRegistry, OrchestrationRegistry

from . import names
from .activities import cloud, cms
from .orchestrations import apply_config, cleanup_resource, create_resource, health_monitor

__all__ = ["activities", "build_activities", "build_orchestrations", "orchestrations",
           "registries"]


def build_activities() -> ActivityRegistry:
    a = names.activities
    return (ActivityRegistry.builder()
            .register(a.RESERVE_RESOURCE, cms.reserve_resource)
            .register(a.UPDATE_STATUS, cms.update_status)
            .register(a.RELEASE_RESERVATION, cms.release_reservation)
            .register(a.RECORD_HEALTH, cms.record_health)
            .register(a.VALIDATE_CONFIG, cms.validate_config)
            .register(a.CREATE_VM, cloud.create_vm)
            .register(a.DELETE_VM, cloud.delete_vm)
            .register(a.CHECK_HEALTH, cloud.check_health)
            .register(a.SNAPSHOT_DISK, cloud.snapshot_disk)
            .register(a.APPLY_SETTINGS, cloud.apply_settings)
            .build())


def build_orchestrations() -> OrchestrationRegistry:
    o = names.orchestrations
    builder = (OrchestrationRegistry.builder()
               .register(o.CREATE_RESOURCE, create_resource)
               .register(o.CLEANUP_RESOURCE, cleanup_resource)
               .register(o.HEALTH_MONITOR, health_monitor))
    # Every version stays registered while instances of it may still run.
    for version, fn in apply_config.VERSIONS:
        builder.register_versioned(o.APPLY_CONFIG, version, fn)
    return builder.build()


activities = build_activities()
orchestrations = build_orchestrations()


def registries() -> tuple[ActivityRegistry, OrchestrationRegistry]:
    """``(activities, orchestrations)``, the form ``duroxy worker MODULE:ATTR`` accepts."""
    return activities, orchestrations
