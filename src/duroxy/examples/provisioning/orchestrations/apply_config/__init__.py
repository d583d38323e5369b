"""apply-config, in three versions registered side by side.

Versioning follows copy-then-bump: to change an orchestration that may have running
instances, copy the latest version's module to a new one, bump ``VERSION``, and change
only the copy. Old modules are never edited again: an instance keeps the version it
started with (its history was written by that code and is replayed against it), while
new instances get the highest registered version. Remove an old module only once no
instance of that version can still be running.

- 1.0.0: apply the settings.
- 1.0.1: validate them first; fail without touching anything if they are invalid.
- 1.0.2: also snapshot the disk before applying (idempotency key: the instance id).
"""

from . import v1_0_0, v1_0_1, v1_0_2

#: (version, orchestration function), oldest first
VERSIONS = [
    (v1_0_0.VERSION, v1_0_0.apply_config),
    (v1_0_1.VERSION, v1_0_1.apply_config),
    (v1_0_2.VERSION, v1_0_2.apply_config),
]

__all__ = ["VERSIONS", "v1_0_0", "v1_0_1", "v1_0_2"]
