"""The public surface named in API.md: names, spellings, aliases, defaults.

A change here is a change of the contract users program against; it must be deliberate.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from datetime import timedelta
from typing import Any

import pytest

import duroxy
import duroxy.errors
from duroxy import (
    ActivityContext,
    ActivityRegistry,
    BackoffStrategy,
    Client,
    ConfigurationError,
    DuroxyError,
    InstanceNotFound,
    OrchestrationContext,
    OrchestrationRegistry,
    OrchestrationState,
    ProviderError,
    RetryPolicy,
    Runtime,
    RuntimeOptions,
)

# Pinned: adding or removing a top-level name is a contract change.
EXPECTED_ALL = [
    "MAX_CARRY_FORWARD_EVENTS",
    "MAX_KV_KEYS",
    "MAX_KV_VALUE_BYTES",
    "MAX_TAG_NAME_BYTES",
    "MAX_WORKER_TAGS",
    "ActivityContext",
    "ActivityFailed",
    "ActivityRegistry",
    "BackoffStrategy",
    "Client",
    "ConfigurationError",
    "DeleteResult",
    "DuroxyError",
    "ErrorDetails",
    "ExecutionInfo",
    "InstanceAlreadyExists",
    "InstanceInfo",
    "InstanceNotFound",
    "InstancePage",
    "InstanceTree",
    "LockLost",
    "MetricsSnapshot",
    "NonDurableAwait",
    "NonRetryableError",
    "NondeterminismError",
    "NotRegistered",
    "OrchestrationContext",
    "OrchestrationRegistry",
    "OrchestrationState",
    "OrchestrationStats",
    "OrchestrationStatus",
    "PayloadError",
    "ProviderError",
    "PruneResult",
    "RetryPolicy",
    "Runtime",
    "RuntimeOptions",
    "SubOrchestrationFailed",
    "TagFilter",
    "WorkerInfo",
    "__version__",
    "connect",
    "init_tracing",
]

# Every name API.md says is importable from top-level duroxy.
API_MD_NAMES = [
    "ActivityContext", "OrchestrationContext", "RetryPolicy", "BackoffStrategy",
    "ActivityRegistry", "OrchestrationRegistry", "Runtime", "RuntimeOptions", "Client",
    "OrchestrationStatus", "OrchestrationState", "InstanceInfo", "DuroxyError",
    "ActivityFailed", "SubOrchestrationFailed", "NondeterminismError",
    "InstanceAlreadyExists", "InstanceNotFound", "NotRegistered", "ProviderError",
    "PayloadError", "connect", "WorkerInfo",
    # API.md section 11
    "NonRetryableError",
]


def test_all_is_pinned_and_sorted() -> None:
    assert duroxy.__all__ == EXPECTED_ALL
    # isort order (ruff RUF022): constants first, then classes and functions, each sorted
    consts = [n for n in duroxy.__all__ if n.isupper()]
    assert duroxy.__all__ == sorted(consts) + sorted(set(duroxy.__all__) - set(consts))
    for name in duroxy.__all__:
        assert hasattr(duroxy, name), name


@pytest.mark.parametrize("name", API_MD_NAMES)
def test_api_md_name_importable_from_top_level(name: str) -> None:
    module = importlib.import_module("duroxy")
    assert getattr(module, name) is not None
    assert name in duroxy.__all__


@pytest.mark.parametrize(("module", "name"), [
    ("duroxy.providers.sqlite", "SqliteProvider"),
    ("duroxy.providers.postgres", "PostgresProvider"),
    ("duroxy.providers.memory", "InMemoryProvider"),
])
def test_providers_importable(module: str, name: str) -> None:
    from duroxy.providers.base import Provider

    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, Provider)
    assert not inspect.iscoroutinefunction(cls.__init__)  # constructors are synchronous


def test_connect_is_synchronous() -> None:
    assert callable(duroxy.connect)
    assert not inspect.iscoroutinefunction(duroxy.connect)


# ======================================================================== options
def test_runtime_options_frozen_keyword_only_with_documented_defaults() -> None:
    assert dataclasses.is_dataclass(RuntimeOptions)
    fields = dataclasses.fields(RuntimeOptions)
    assert fields and all(f.kw_only for f in fields)
    opts = RuntimeOptions()
    assert opts.orchestration_lock_timeout == 5.0
    assert opts.activity_lock_timeout == 30.0
    names = {f.name for f in fields}
    assert {"orchestration_concurrency", "activity_concurrency", "max_attempts"} <= names
    with pytest.raises(TypeError):
        RuntimeOptions(5.0)  # type: ignore[call-arg, arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.activity_lock_timeout = 1.0  # type: ignore[misc]
    assert RuntimeOptions(activity_lock_timeout=12.0).activity_lock_timeout == 12.0
    assert opts.heartbeat_interval == 10.0  # API.md section 12


def test_retry_policy_spellings() -> None:
    assert RetryPolicy().max_attempts == 3 and RetryPolicy().timeout is None
    policy = RetryPolicy(5).with_backoff(
        BackoffStrategy.Exponential(base=timedelta(seconds=2), multiplier=2.0,
                                    max=timedelta(seconds=30))
    ).with_timeout(timedelta(seconds=60))
    assert policy.max_attempts == 5
    assert policy.timeout == timedelta(seconds=60)
    assert RetryPolicy(max_attempts=2, backoff=BackoffStrategy.Fixed(delay=1), timeout=None)
    # The documented waits after failed attempt n.
    assert BackoffStrategy.Fixed(delay=3).delay_after(4) == 3
    assert BackoffStrategy.Linear(base=1, max=2.5).delay_after(2) == 2
    assert BackoffStrategy.Linear(base=1, max=2.5).delay_after(3) == 2.5
    assert BackoffStrategy.Exponential(base=1, multiplier=3.0, max=30).delay_after(3) == 9
    # API.md section 11: non-retryable error types, as classes or names
    assert RetryPolicy().non_retryable == ()
    listed = RetryPolicy(5, non_retryable=(ValueError, "CardDeclined"))
    assert listed.non_retryable == (ValueError, "CardDeclined")
    built = RetryPolicy(5).with_non_retryable(ValueError, "CardDeclined")
    assert built == listed
    assert built.non_retryable_names == {"ValueError", "CardDeclined"}
    with pytest.raises(TypeError, match="non_retryable"):
        RetryPolicy(non_retryable=(ValueError, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non_retryable"):
        RetryPolicy().with_non_retryable(None)  # type: ignore[arg-type]


# ======================================================================== errors
def test_internal_control_flow_is_not_an_exception() -> None:
    from duroxy._engine import ContinueAsNew
    from duroxy._engine.futures import Nondeterministic

    for cls in (ContinueAsNew, Nondeterministic):
        assert issubclass(cls, BaseException)
        assert not issubclass(cls, Exception), cls


def _error_classes() -> list[type[BaseException]]:
    return [obj for name in duroxy.errors.__all__
            if isinstance(obj := getattr(duroxy.errors, name), type)
            and issubclass(obj, BaseException)]


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_derives_from_duroxy_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, DuroxyError)


def test_error_tree_is_complete() -> None:
    names = {c.__name__ for c in _error_classes()}
    assert {"DuroxyError", "ActivityFailed", "SubOrchestrationFailed", "NondeterminismError",
            "InstanceAlreadyExists", "InstanceNotFound", "NotRegistered", "ProviderError",
            "PayloadError"} <= names


def test_provider_error_has_retryable() -> None:
    assert ProviderError("down").retryable is False
    assert ProviderError("busy", retryable=True).retryable is True


def test_failure_exceptions_carry_documented_attributes() -> None:
    e = duroxy.ActivityFailed("reserve", "KeyError", "missing key", 3)
    assert (e.activity_name, e.error_type, e.message, e.attempts) == (
        "reserve", "KeyError", "missing key", 3)
    assert e.retryable is True  # API.md section 11: False once a failure stops retries
    assert duroxy.ActivityFailed("r", "T", "m", retryable=False).retryable is False
    assert issubclass(duroxy.NonRetryableError, DuroxyError)
    assert "missing key" in str(e)
    s = duroxy.SubOrchestrationFailed("child", "kid-1", "ValueError", "bad input")
    assert (s.orchestration_name, s.instance_id, s.error_type, s.message) == (
        "child", "kid-1", "ValueError", "bad input")
    assert "bad input" in str(s)


def test_orchestration_state_members() -> None:
    assert {m.name for m in OrchestrationState} >= {
        "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "NOT_FOUND"}
    for name in ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "NOT_FOUND"):
        assert getattr(OrchestrationState, name).name == name


def test_status_and_info_fields() -> None:
    status = {f.name for f in dataclasses.fields(duroxy.OrchestrationStatus)}
    assert {"state", "output", "error", "custom_status", "custom_status_version"} <= status
    assert isinstance(duroxy.OrchestrationStatus.is_terminal, property)
    info = {f.name for f in dataclasses.fields(duroxy.InstanceInfo)}
    assert {"instance_id", "name", "version", "state", "execution_id", "created_at",
            "updated_at", "parent_instance_id", "custom_status_version"} <= info
    # API.md section 10: the admin values
    fields = {cls: [f.name for f in dataclasses.fields(cls)] for cls in (
        duroxy.ExecutionInfo, duroxy.PruneResult, duroxy.DeleteResult,
        duroxy.OrchestrationStats, duroxy.InstancePage)}
    assert fields[duroxy.ExecutionInfo] == ["execution_id", "state", "started_at",
                                            "completed_at", "event_count", "output", "error"]
    assert fields[duroxy.PruneResult] == ["instances_processed", "executions_deleted",
                                          "events_deleted"]
    assert fields[duroxy.DeleteResult] == ["instances_deleted", "executions_deleted",
                                           "events_deleted", "queue_messages_deleted",
                                           "skipped", "not_found"]
    assert set(fields[duroxy.OrchestrationStats]) == {
        "history_event_count", "history_size_bytes", "queue_pending_count",
        "kv_user_key_count", "kv_total_value_bytes", "execution_count"}
    assert fields[duroxy.InstancePage] == ["items", "next_page_token"]
    tree = duroxy.InstanceTree("r", ("r", "c"), {"c": "r"})
    assert (tree.root_id, tree.size, tree.children("r")) == ("r", 2, ("c",))
    assert (duroxy.MAX_KV_KEYS, duroxy.MAX_KV_VALUE_BYTES) == (150, 65_536)
    # API.md section 12: exactly these
    assert [f.name for f in dataclasses.fields(duroxy.WorkerInfo)] == [
        "worker_id", "worker_node_id", "host", "pid", "duroxy_version",
        "started_at", "last_seen_at", "stopped_at",
        "orchestration_concurrency", "activity_concurrency", "tag_filter",
        "sessions_owned", "active_activities", "orchestrations", "activities", "alive"]


# ======================================================================== context
CONTEXT_METHODS = [
    "schedule_activity", "schedule_activity_with_retry", "schedule_timer", "schedule_wait",
    "wait_for_event", "schedule_sub_orchestration", "schedule_orchestration",
    "continue_as_new", "select2", "select", "join", "utcnow", "new_guid", "trace_info",
    "trace_warn", "trace_error", "trace_debug", "set_custom_status", "get_custom_status",
    "schedule_activity_typed", "schedule_sub_orchestration_typed",
    # API.md sections 7, 8 and 10
    "dequeue_event", "dequeue_event_typed", "wait_for_event_typed", "set_kv_value",
    "get_kv_value", "clear_kv_value", "clear_all_kv_values", "get_kv_all_keys",
    "get_kv_all_values", "get_kv_length", "prune_kv_values_updated_before",
    "get_kv_value_from_instance", "reset_custom_status",
    # API.md section 9
    "schedule_activity_on_session", "schedule_activity_on_session_typed",
    "schedule_activity_with_retry_on_session",
    "schedule_activity_with_retry_on_session_typed",
    # API.md section 11
    "is_patched", "deprecate_patch",
]
CONTEXT_PROPERTIES = ["instance_id", "execution_id", "orchestration_name",
                      "orchestration_version", "is_replaying", "parent_instance_id"]


@pytest.mark.parametrize("name", CONTEXT_METHODS)
def test_context_method(name: str) -> None:
    assert callable(getattr(OrchestrationContext, name, None)), name


@pytest.mark.parametrize("name", CONTEXT_PROPERTIES)
def test_context_property(name: str) -> None:
    assert isinstance(getattr(OrchestrationContext, name, None), property), name


def test_context_aliases() -> None:
    assert OrchestrationContext.wait_for_event is OrchestrationContext.schedule_wait
    assert OrchestrationContext.wait_for_event_typed is OrchestrationContext.schedule_wait_typed
    assert Client.enqueue_event_typed is Client.enqueue_event
    assert Client.delete_instance_bulk is Client.delete_instances


@pytest.mark.parametrize("name", ["trace_info", "trace_warn", "trace_error", "trace_debug",
                                  "is_cancelled", "cancelled", "get_client"])
def test_activity_context_method(name: str) -> None:
    assert callable(getattr(ActivityContext, name, None)), name


def test_activity_context_cancelled_is_awaitable() -> None:
    assert inspect.iscoroutinefunction(ActivityContext.cancelled)


# ======================================================================== routing
def test_routing_keywords_and_session_spellings() -> None:
    """API.md section 9: the keywords of the schedule calls, the Duroxide spellings'
    positional session id, and with_tag on the durable future."""
    from duroxy._engine.futures import DurableFuture

    for name in ("schedule_activity", "schedule_activity_with_retry"):
        params = inspect.signature(getattr(OrchestrationContext, name)).parameters
        for keyword in ("output_type", "session_id", "tag"):
            assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY, (name, keyword)
            assert params[keyword].default is None, (name, keyword)
    on_session = inspect.signature(OrchestrationContext.schedule_activity_on_session)
    assert list(on_session.parameters)[:5] == ["self", "name_or_fn", "input", "session_id",
                                               "output_type"]
    assert on_session.parameters["output_type"].kind is inspect.Parameter.KEYWORD_ONLY
    with_retry = inspect.signature(OrchestrationContext.schedule_activity_with_retry_on_session)
    assert list(with_retry.parameters)[:6] == ["self", "name_or_fn", "input", "retry",
                                               "session_id", "output_type"]
    assert callable(DurableFuture.with_tag)
    ctx = ActivityContext(instance_id="i", execution_id=1, orchestration_name="o",
                          orchestration_version=None, activity_name="a", attempt=1,
                          worker_id="w")
    assert (ctx.session_id, ctx.tag) == (None, None)


def test_runtime_options_routing_defaults() -> None:
    opts = RuntimeOptions()
    assert opts.worker_tag_filter == duroxy.TagFilter.DEFAULT_ONLY
    assert (opts.max_sessions_per_runtime, opts.session_idle_timeout,
            opts.session_lock_timeout, opts.worker_node_id) == (10, 300.0, 30.0, None)
    assert (duroxy.MAX_WORKER_TAGS, duroxy.MAX_TAG_NAME_BYTES) == (5, 256)


def test_tag_filter_is_a_frozen_value() -> None:
    tf = duroxy.TagFilter
    assert dataclasses.is_dataclass(tf)
    gpu = tf.tags(["gpu", "cpu"])
    assert gpu == tf.tags({"cpu", "gpu"}) and hash(gpu) == hash(tf.tags(["cpu", "gpu"]))
    assert (gpu.tags, gpu.include_default) == (frozenset({"gpu", "cpu"}), False)
    assert tf.default_and(["gpu"]).include_default and tf.DEFAULT_ONLY.include_default
    assert tf.DEFAULT_ONLY.tags == frozenset() and not tf.NONE.include_default
    with pytest.raises(dataclasses.FrozenInstanceError):
        gpu.include_default = True  # type: ignore[misc]
    assert [repr(f) for f in (tf.DEFAULT_ONLY, tf.ANY, tf.NONE, gpu,
                              tf.default_and(["gpu"]))] == [
        "TagFilter.DEFAULT_ONLY", "TagFilter.ANY", "TagFilter.NONE",
        "TagFilter.tags(['cpu', 'gpu'])", "TagFilter.default_and(['gpu'])"]
    assert len({tf.DEFAULT_ONLY, tf.ANY, tf.NONE, gpu, tf.default_and(["cpu", "gpu"])}) == 5


# ======================================================================== registries
BUILDER_METHODS = ["register", "register_typed", "register_versioned",
                   "register_versioned_typed"]


@pytest.mark.parametrize("registry", [ActivityRegistry, OrchestrationRegistry],
                         ids=lambda r: r.__name__)
@pytest.mark.parametrize("method", BUILDER_METHODS)
def test_registry_builder_method(registry: Any, method: str) -> None:
    builder = registry.builder()
    assert callable(getattr(builder, method, None)), (
        f"{type(builder).__name__} has no {method}")
    assert callable(builder.build)


@pytest.mark.parametrize("registry", [ActivityRegistry, OrchestrationRegistry],
                         ids=lambda r: r.__name__)
def test_registry_builder_aliases(registry: Any) -> None:
    cls = type(registry.builder())
    assert cls.register_typed is cls.register
    if hasattr(cls, "register_versioned_typed"):
        assert cls.register_versioned_typed is cls.register_versioned


# ======================================================================== runtime, client
def test_runtime_lifecycle_spellings() -> None:
    assert inspect.iscoroutinefunction(Runtime.start)
    assert inspect.iscoroutinefunction(Runtime.shutdown)
    assert "timeout" in inspect.signature(Runtime.shutdown).parameters
    assert hasattr(Runtime, "__aenter__") and hasattr(Runtime, "__aexit__")
    params = list(inspect.signature(Runtime.start).parameters)
    assert params[:4] == ["provider", "activities", "orchestrations", "options"]


CLIENT_METHODS = [
    "start_orchestration", "start_orchestration_versioned", "raise_event", "send_signal",
    "cancel_instance", "wait_for_orchestration", "get_orchestration_status",
    "get_instance_info", "list_instances", "read_history", "delete_instance",
    "purge_instances", "list_workers",
    # API.md sections 7, 8 and 10
    "enqueue_event", "enqueue_event_typed", "raise_event_typed", "get_kv_value",
    "get_kv_all_values", "wait_for_kv_value", "wait_for_status_change", "list_executions",
    "get_execution_info", "prune_executions", "prune_executions_bulk", "get_instance_tree",
    "get_orchestration_stats", "delete_instances", "delete_instance_bulk",
    "list_instances_page",
    # API.md section 10: export of histories
    "export_history",
]


@pytest.mark.parametrize("name", CLIENT_METHODS)
def test_client_method_is_async(name: str) -> None:
    method = getattr(Client, name, None)
    assert method is not None, name
    assert inspect.iscoroutinefunction(method), f"Client.{name} must be async"


def test_client_signatures() -> None:
    assert Client.send_signal is Client.raise_event
    params = inspect.signature(Client.start_orchestration).parameters
    assert list(params)[1:4] == ["instance_id", "name", "input"]
    assert params["input"].default is None
    params = inspect.signature(Client.start_orchestration_versioned).parameters
    assert list(params)[1:5] == ["instance_id", "name", "version", "input"]
    assert inspect.signature(Client.cancel_instance).parameters["reason"].default == ""
    assert "timeout" in inspect.signature(Client.wait_for_orchestration).parameters
    assert inspect.signature(Client.delete_instance).parameters["force"].default is False
    params = inspect.signature(Client.list_instances).parameters
    assert params["limit"].default is None  # every match unless a limit is given
    assert params["state"].kind is inspect.Parameter.KEYWORD_ONLY
    assert {"parent_instance_id", "created_after", "created_before", "offset"} <= set(params)
    assert "execution_id" in inspect.signature(Client.read_history).parameters
    params = inspect.signature(Client.list_workers).parameters
    assert list(params) == ["self", "include_stopped"]
    assert params["include_stopped"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["include_stopped"].default is False


def test_history_events_show_their_kind() -> None:
    from duroxy.history import TimerCreated

    event = TimerCreated(event_id=3, ts=1_700_000_000_000, fire_at=1_700_000_005_000)
    assert event.kind == "TimerCreated"
    assert "TimerCreated" in str(event)
    assert event.timestamp.tzinfo is not None


def test_backoff_strategies_are_backoff_strategies_and_options_take_timedeltas() -> None:
    from datetime import timedelta

    for strategy in (BackoffStrategy.Fixed(1), BackoffStrategy.Linear(),
                     BackoffStrategy.Exponential(base=timedelta(seconds=2))):
        assert isinstance(strategy, BackoffStrategy)
    opts = RuntimeOptions(orchestration_lock_timeout=timedelta(seconds=7),
                          poll_interval=timedelta(milliseconds=20))
    assert opts.orchestration_lock_timeout == 7.0 and opts.poll_interval == 0.02
    with pytest.raises(ValueError, match="poll_interval"):
        RuntimeOptions(poll_interval=timedelta(0))
    assert RuntimeOptions(heartbeat_interval=timedelta(seconds=3)).heartbeat_interval == 3.0


@pytest.mark.parametrize("kwargs", [
    {"orchestration_concurrency": 1.5}, {"activity_concurrency": -1}, {"max_attempts": True},
    {"max_attempts": float("inf")}, {"cache_size": float("nan")}, {"cache_size": -1},
    {"orchestration_lock_timeout": float("nan")}, {"activity_lock_timeout": float("inf")},
    {"poll_interval": 0}, {"not_registered_backoff": -1}, {"worker_id": 5},
    {"worker_id": ""}, {"worker_id": "a\x00b"}, {"worker_id": "w" * 1025},
    {"heartbeat_interval": 0}, {"heartbeat_interval": -1.0}, {"heartbeat_interval": "10"},
    {"orchestration_concurrency": -1}, {"max_sessions_per_runtime": -1},
    {"max_sessions_per_runtime": 2.5}, {"session_idle_timeout": 0},
    {"session_idle_timeout": 30.0}, {"session_lock_timeout": 0},
    {"session_lock_timeout": float("nan")}, {"worker_node_id": ""},
    {"worker_node_id": "n\x00"}, {"worker_node_id": 7},
])
def test_runtime_options_reject_what_would_break_the_runtime(kwargs: dict[str, Any]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        RuntimeOptions(**kwargs)


@pytest.mark.parametrize(("make", "needle"), [
    (lambda: BackoffStrategy.Fixed(delay=-1), "Fixed.delay"),
    (lambda: BackoffStrategy.Fixed(delay=float("nan")), "Fixed.delay"),
    (lambda: BackoffStrategy.Fixed(delay=float("inf")), "Fixed.delay"),
    (lambda: BackoffStrategy.Linear(max=-1), "Linear.max"),
    (lambda: BackoffStrategy.Exponential(multiplier=float("nan")), "multiplier"),
    (lambda: BackoffStrategy.Exponential(multiplier=-2), "multiplier"),
    (lambda: RetryPolicy(True), "max_attempts"),  # a bool is no count of attempts
    (lambda: RetryPolicy(3, timeout=float("inf")), "timeout"),
])
def test_retry_settings_are_checked_when_made(make: Any, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        make()


@pytest.mark.parametrize("busy", [float("inf"), float("nan"), -1, "3", True])
def test_sqlite_busy_timeout_is_checked_when_made(busy: Any, tmp_path: Any) -> None:
    from duroxy.providers.sqlite import SqliteProvider

    with pytest.raises(ConfigurationError, match="busy_timeout"):
        SqliteProvider(tmp_path / "x.db", busy_timeout=busy)
    with pytest.raises(ConfigurationError, match="busy_timeout"):
        SqliteProvider(f"sqlite:///{tmp_path}/y.db?busy_timeout=inf")


@pytest.mark.parametrize("bad", ["\ud800", "ok\udfff"])
async def test_ids_with_lone_surrogates_are_refused_at_the_call(bad: str) -> None:
    from duroxy.providers.memory import InMemoryProvider

    client = Client(InMemoryProvider())
    with pytest.raises(ValueError, match=r"instance id.*surrogate"):
        await client.start_orchestration(bad, "x")
    with pytest.raises(ValueError, match="surrogate"):
        await client.start_orchestration("fine", bad)
    with pytest.raises(ConfigurationError, match="surrogate"):
        ActivityRegistry.builder().register(bad, lambda ctx, x: x).build()


async def test_client_counts_and_execution_ids_are_checked_at_the_call() -> None:
    from duroxy.providers.memory import InMemoryProvider

    client = Client(InMemoryProvider())
    for bad in (2.5, "5", -1, True, 10**30):
        with pytest.raises(ValueError, match="limit"):
            await client.list_instances(limit=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="limit"):
            await client.purge_instances(limit=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="offset"):
        await client.list_instances(offset=-3)
    with pytest.raises(ValueError, match="execution_id"):
        await client.read_history("any", "1")  # type: ignore[arg-type]
    with pytest.raises(InstanceNotFound):
        await client.list_executions("nope")


def test_durations_beyond_a_thousand_years_are_refused_when_made() -> None:
    from datetime import timedelta

    with pytest.raises(ValueError, match="timeout"):
        RetryPolicy(3, timeout=timedelta(days=400_000))
    with pytest.raises(ValueError, match=r"Fixed\.delay"):
        BackoffStrategy.Fixed(delay=1e12)
    with pytest.raises(ValueError, match="orchestration_lock_timeout"):
        RuntimeOptions(orchestration_lock_timeout=1e12)
    assert RetryPolicy(3, timeout=timedelta(days=365)).timeout_seconds == 365 * 86400


# ======================================================================== sections 10, 11
TESTING_ALL = ["ActivityEnvironment", "LintFinding", "OrchestrationEnvironment",
               "ReplayReport", "ReplayResult", "Replayer", "lint"]


def test_testing_kit_names() -> None:
    import duroxy.testing

    assert sorted(duroxy.testing.__all__) == TESTING_ALL
    for name in TESTING_ALL:
        assert hasattr(duroxy.testing, name), name
    from duroxy.testing import OrchestrationEnvironment, Replayer

    assert OrchestrationEnvironment.__name__[:4] != "Test"  # pytest would collect it
    params = inspect.signature(OrchestrationEnvironment).parameters
    assert list(params)[:2] == ["activities", "orchestrations"]
    assert {n: params[n].default for n in list(params)[2:]} == {
        "time_skipping": True, "store": "memory", "options": None, "start_time": None}
    assert inspect.iscoroutinefunction(OrchestrationEnvironment.start)
    assert inspect.iscoroutinefunction(OrchestrationEnvironment.shutdown)
    assert inspect.iscoroutinefunction(OrchestrationEnvironment.sleep)
    for name in ("replay_history", "replay", "replay_store"):
        assert inspect.iscoroutinefunction(getattr(Replayer, name)), name
    assert inspect.signature(Replayer.replay_history).parameters[
        "raise_on_failure"].default is True
    assert inspect.signature(Replayer.replay).parameters["raise_on_failure"].default is False
    params = inspect.signature(Replayer.replay_store).parameters
    assert {n: params[n].default for n in ("name", "state", "limit", "all_executions")} == {
        "name": None, "state": None, "limit": 1000, "all_executions": False}
    fields = [f.name for f in dataclasses.fields(duroxy.testing.ReplayResult)]
    assert fields == ["instance_id", "execution_id", "name", "version", "ok", "kind",
                      "message", "event_id"]
    assert {"results", "failures", "ok"} <= set(dir(duroxy.testing.ReplayReport))


def test_history_export_names() -> None:
    import duroxy.history

    for name in ("ExecutionHistory", "dump_histories", "load_histories", "PatchRecorded"):
        assert name in duroxy.history.__all__, name
    fields = [f.name for f in dataclasses.fields(duroxy.history.ExecutionHistory)]
    assert fields == ["instance_id", "execution_id", "name", "version", "events"]
    params = inspect.signature(Client.export_history).parameters
    assert list(params)[1:] == ["instance_id", "execution_id"]
    assert params["execution_id"].default is None
