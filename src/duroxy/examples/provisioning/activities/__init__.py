"""The provisioning app's activities, grouped by the system they talk to:

- :mod:`.cms` - the control plane's metadata store (reservations, status, health log);
- :mod:`.cloud` - the compute provider (VMs, disks, settings).

Every activity is idempotent: it first checks whether its work was already done and,
if so, reports that instead of doing it twice.
"""
