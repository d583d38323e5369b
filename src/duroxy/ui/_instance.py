"""What the instance page shows, read through the public ``Client`` only: the status,
the executions (``get_execution_info``), one execution's timeline, the key-value state,
the sizes and unread messages (``get_orchestration_stats``), and the instance tree
(``get_instance_tree``).

Bounds keep a page cheap on any instance: the newest ``EXECUTIONS_SHOWN`` executions
are listed (any other opens by its number), the first ``TREE_SHOWN`` instances of a
tree are drawn, and a KV value shows its first ``KV_VALUE_CHARS`` characters. The page
says when it leaves something out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._admin import ExecutionInfo, OrchestrationStats
from ..client import Client, InstanceInfo, OrchestrationState
from ..errors import InstanceNotFound
from ..history import EventSubscribed, OrchestrationStarted, QueueSubscribed
from ._timeline import Timeline, pretty, timeline

__all__ = ["EXECUTIONS_SHOWN", "KV_VALUE_CHARS", "TREE_SHOWN", "InstanceView", "KvRow",
           "TreeNode", "load"]

#: the newest executions listed on the page
EXECUTIONS_SHOWN = 20
#: the most instances of a tree drawn
TREE_SHOWN = 200
#: the most characters of one KV value shown
KV_VALUE_CHARS = 2000
_RUNNING = frozenset({OrchestrationState.PENDING, OrchestrationState.RUNNING})


@dataclass
class TreeNode:
    info: InstanceInfo
    children: list[TreeNode] = field(default_factory=list)


@dataclass(frozen=True)
class KvRow:
    key: str
    text: str
    #: the value was longer than KV_VALUE_CHARS and is cut
    cut: bool


@dataclass
class InstanceView:
    info: InstanceInfo
    running: bool
    #: the execution whose timeline is shown
    selected: int
    timeline: Timeline
    #: the selected execution's input (stored JSON text), if its history has it
    input: str | None
    #: the newest executions, newest first
    executions: list[ExecutionInfo]
    #: executions stored but not listed
    older: int
    kv: list[KvRow]
    stats: OrchestrationStats | None
    tree: TreeNode
    #: instances in the whole tree (the drawing stops at TREE_SHOWN)
    tree_size: int
    parent: InstanceInfo | None
    #: queue and event names the shown execution waited on (suggestions for the forms)
    queues: list[str]
    events: list[str]


async def load(client: Client, instance_id: str, execution: int | None,
               now_ms: int) -> InstanceView:
    """Everything the instance page shows. ``InstanceNotFound`` for an unknown (or
    just deleted) instance, ``KeyError`` for an execution it does not have."""
    info = await client.get_instance_info(instance_id)
    running = info.state in _RUNNING
    stored = await client.list_executions(instance_id)
    if info.execution_id not in stored:  # started, no turn run yet: it has no history
        stored.append(info.execution_id)
    selected = info.execution_id if execution is None else execution
    if selected not in stored:
        raise KeyError(f"instance {instance_id!r} has no execution {selected} (executions "
                       f"stored: {_ranges(stored)})")
    newest = sorted(stored, reverse=True)[:EXECUTIONS_SHOWN]
    executions = []
    for execution_id in newest:
        try:
            executions.append(await client.get_execution_info(instance_id, execution_id))
        except KeyError:  # pruned meanwhile
            continue
    events = await client.read_history(instance_id, selected)
    current = running and selected == info.execution_id
    first = events[0] if events else None
    values = await client.get_kv_all_values(instance_id)
    kv = [KvRow(key, text[:KV_VALUE_CHARS], len(text) > KV_VALUE_CHARS)
          for key, text in ((k, pretty(v)) for k, v in values.items())]
    tree, tree_size = await _tree(client, info)
    return InstanceView(
        info=info, running=running, selected=selected,
        timeline=timeline(selected, events, now_ms, current),
        input=first.input if isinstance(first, OrchestrationStarted) else None,
        executions=executions, older=len(stored) - len(newest), kv=kv,
        stats=await client.get_orchestration_stats(instance_id), tree=tree,
        tree_size=tree_size, parent=await _parent(client, info),
        queues=sorted({e.name for e in events if isinstance(e, QueueSubscribed)}),
        events=sorted({e.name for e in events if isinstance(e, EventSubscribed)}))


def _ranges(ids: list[int]) -> str:
    ids = sorted(ids)
    return f"{ids[0]} to {ids[-1]}" if len(ids) > 2 else ", ".join(map(str, ids))


async def _tree(client: Client, root: InstanceInfo) -> tuple[TreeNode, int]:
    """The instance and its descendants (children of every execution), breadth first
    in creation order: the first ``TREE_SHOWN`` of them, and how many there are."""
    try:
        found = await client.get_instance_tree(root.instance_id)
    except InstanceNotFound:  # deleted meanwhile: the page shows what it read
        return TreeNode(root), 1
    nodes = {root.instance_id: TreeNode(root)}
    for iid in found.all_ids[1:TREE_SHOWN]:
        parent = nodes.get(found.parent_of.get(iid, ""))
        if parent is None:  # its parent went between the two reads
            continue
        try:
            node = TreeNode(await client.get_instance_info(iid))
        except InstanceNotFound:
            continue
        nodes[iid] = node
        parent.children.append(node)
    return nodes[root.instance_id], found.size


async def _parent(client: Client, info: InstanceInfo) -> InstanceInfo | None:
    if info.parent_instance_id is None:
        return None
    try:
        return await client.get_instance_info(info.parent_instance_id)
    except InstanceNotFound:
        return None
