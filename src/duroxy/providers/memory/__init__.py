"""In-memory reference provider: the contract of :mod:`duroxy.providers.base`, plainly.

Single process, nothing durable. Every method does its whole work under one
``threading.Lock``, so each call is one atomic "transaction" and the provider works
from any event loop and any thread. Listeners are called after the lock is released.

Stored payloads are kept in their wire form (history events via
:func:`~duroxy.history.encode_event`, queued messages via
:func:`~duroxy.history.encode_message`, activity work as JSON), exactly as a database
would keep them, so decoding failures are real (the conformance suite's fixtures store
undecodable rows to exercise them).

Choices where the contract leaves room (the conformance suite checks them):

* A lock whose expiry has passed is lost even if nobody took the instance or row over.
* ``abandon_orchestration_item(delay > 0)`` keeps the whole *instance* out of fetches
  until the delay has passed (messages enqueued meanwhile wait too), so an instance's
  messages are never delivered out of enqueue order.
* ``abandon_activity`` and ``abandon_orchestration_item`` raise ``LockLost`` when the
  lock is no longer held.
* An item fetched for an instance without a record acks away its messages (and
  enqueues what the commit asks for) but creates no record and stores no history.
* ``delete_instance`` also drops the instance's orchestration lock, so a turn in flight
  for a deleted instance fails its ack with ``LockLost`` instead of resurrecting it.
* ``purge_instances`` deletes exactly the matching instances (no cascade), oldest
  updated first when ``limit`` applies.
* History is appended in commit order; an event id already present in that execution
  (or repeated within the commit) fails the ack with ``ProviderError`` and changes
  nothing, like a primary-key violation in a database. The lock stays held.
* ``read_history`` without an execution id reads the highest execution that has history.
* Worker heartbeat rows are kept as the :class:`~duroxy.providers.base.WorkerRecord` s
  given.
* Key-value state is a dict per instance, changed by acks only; listings of it are
  sorted by key.

A fresh provider is empty, so there is nothing to open read-only; instead,
:meth:`InMemoryProvider.read_only_view` gives a read-only provider on the data of an
existing one, as a store opened read-only reads what its writers hold.
"""

from .provider import InMemoryProvider

__all__ = ["InMemoryProvider"]
