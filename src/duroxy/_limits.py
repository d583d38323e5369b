"""Limits that user code meets, each raised or enforced where it is named."""

from __future__ import annotations

__all__ = ["MAX_CARRY_FORWARD_EVENTS"]

#: How many unread messages (events raised and never waited for) ``continue_as_new``
#: carries to the next execution, oldest first; newer ones are dropped with a warning.
#: Duroxide carries the same number (v0.1.29 ``limits.rs``), in history order.
MAX_CARRY_FORWARD_EVENTS = 100
