"""The administration commands: ``enqueue``, ``kv``, ``prune``,
``tree`` and ``stats`` (``list`` paging lives with ``list`` in ``_commands``)."""

from __future__ import annotations

import dataclasses

from .._render import dumps, name_at
from ._common import EXIT_OK, Env, NotFound, UsageError, parse_json


async def cmd_enqueue(env: Env) -> int:
    a = env.args
    data = parse_json(a.data, "message data")
    await env.client.enqueue_event(a.instance_id, a.queue, data)
    if env.as_json:
        env.show({"instance_id": a.instance_id, "queue": a.queue, "enqueued": True})
    else:
        env.print(f"enqueued to queue {a.queue!r} of {a.instance_id}")
    return EXIT_OK


async def cmd_kv(env: Env) -> int:
    a = env.args
    if a.key is None:
        values = await env.client.get_kv_all_values(a.instance_id)
        if env.as_json:
            env.show({"instance_id": a.instance_id, "values": values})
        elif not values:
            env.print(f"{a.instance_id} has no KV keys")
        else:
            width = min(max(len(k) for k in values), 40)
            for key, value in values.items():
                env.print(f"{key:<{width}}  {dumps(value)}")
        return EXIT_OK
    missing = object()
    value = await env.client.get_kv_value(a.instance_id, a.key, missing)
    if value is missing:
        raise NotFound(f"instance {a.instance_id!r} has no KV key {a.key!r}")
    if env.as_json:
        env.show({"instance_id": a.instance_id, "key": a.key, "value": value})
    else:
        env.print(dumps(value))
    return EXIT_OK


async def cmd_prune(env: Env) -> int:
    a = env.args
    if a.keep_last < 0:
        raise UsageError(f"--keep-last must be 0 or more, not {a.keep_last}")
    result = await env.client.prune_executions(a.instance_id, keep_last=a.keep_last)
    if env.as_json:
        env.show({"instance_id": a.instance_id, **dataclasses.asdict(result)})
    else:
        left = await env.client.list_executions(a.instance_id)
        env.print(f"pruned {result.executions_deleted} execution(s), "
                  f"{result.events_deleted} event(s) of {a.instance_id}; executions left: "
                  f"{', '.join(map(str, left)) or 'none'}")
    return EXIT_OK


async def cmd_tree(env: Env) -> int:
    tree = await env.client.get_instance_tree(env.args.instance_id)
    if env.as_json:
        env.show({"root_id": tree.root_id, "all_ids": list(tree.all_ids),
                  "parent_of": dict(tree.parent_of)})
        return EXIT_OK

    async def show(instance_id: str, depth: int) -> None:
        info = await env.client.get_instance_info(instance_id)
        env.print(f"{'  ' * depth}{instance_id}  {name_at(info.name, info.version)}  "
                  f"{info.state.value}")
        for child in tree.children(instance_id):
            await show(child, depth + 1)

    await show(tree.root_id, 0)
    return EXIT_OK


async def cmd_stats(env: Env) -> int:
    iid = env.args.instance_id
    stats = await env.client.get_orchestration_stats(iid)
    if stats is None:
        raise NotFound(f"no instance {iid!r}")
    if env.as_json:
        env.show({"instance_id": iid, **dataclasses.asdict(stats)})
        return EXIT_OK
    rows = [("history events", f"{stats.history_event_count:,} (current execution)"),
            ("history size", f"{stats.history_size_bytes:,} bytes"),
            ("pending", f"{stats.queue_pending_count:,} event(s) and queue message(s)"),
            ("KV keys", f"{stats.kv_user_key_count:,}"),
            ("KV size", f"{stats.kv_total_value_bytes:,} bytes"),
            ("executions", f"{stats.execution_count:,} stored")]
    for label, value in rows:
        env.print(f"{label:<15} {value}")
    return EXIT_OK
