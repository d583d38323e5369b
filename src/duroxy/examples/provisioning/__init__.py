"""A small cloud control plane built on duroxy: provisioning resources (VMs) against an
in-process fake cloud and metadata store.

Layout:

- :mod:`.names` - every orchestration, activity and event name (``"provisioning::..."``);
- :mod:`.types` - orchestration inputs and outputs; :mod:`.activity_types` - activities';
- :mod:`.activities` - activities grouped by domain (``cms``, ``cloud``);
- :mod:`.orchestrations` - create-resource, cleanup-resource, health-monitor and the
  versioned apply-config;
- :mod:`.registry` - the registries a worker runs; :mod:`.fake_cloud` - the fake world;
- :mod:`.demo` - what ``duroxy demo`` runs.
"""
