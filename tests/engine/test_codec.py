"""The payload codec: JSON text in and out, driven by annotations.

This module uses string annotations on purpose: every type below is resolved by the
codec from its module, as it would be for user code written that way.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Generic,
    Literal,
    NamedTuple,
    NewType,
    NotRequired,
    Optional,
    TypedDict,
    TypeVar,
    Union,
)

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duroxy import codec
from duroxy.errors import PayloadError

if TYPE_CHECKING:
    from duroxy import ActivityContext  # never resolvable at run time here

# ----------------------------------------------------------------- test types


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mode(enum.StrEnum):
    FAST = "fast"
    SAFE = "safe"


class Corner(enum.Enum):
    ORIGIN = (0, 0)
    FAR = (1, 1)


UserId = NewType("UserId", str)


@dataclass
class Item:
    sku: str
    quantity: int
    price: Decimal = Decimal("0")


@dataclass
class Order:
    quantity: int
    items: list[Item] = field(default_factory=list)
    note: Optional[str] = None  # noqa: UP045  (the old spelling must resolve too)
    tags: dict[str, Item] = field(default_factory=dict)
    color: Color = Color.RED


@dataclass(frozen=True, slots=True)
class Frozen:
    when: datetime
    who: UserId
    mode: Mode | None = None


@dataclass
class Node:
    name: str
    children: list[Node] = field(default_factory=list)


@dataclass
class Computed:
    a: int
    b: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.b = self.a * 2


@dataclass
class Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError("n must be positive")


T = TypeVar("T")


@dataclass
class Box(Generic[T]):
    value: T
    values: list[T]


class Movie(TypedDict):
    title: str
    year: int
    rating: NotRequired[float]


class Sparse(TypedDict, total=False):
    when: date
    color: Color


class Point(NamedTuple):
    x: float
    y: float
    label: str = ""


class Address(pydantic.BaseModel):
    city: str
    zip: str


class Customer(pydantic.BaseModel):
    id: uuid.UUID
    name: str
    since: datetime
    credit: Decimal
    address: Address
    tags: list[str] = []


class Measure(pydantic.BaseModel):
    x: float


class Reading(pydantic.BaseModel):
    address: Measure


@dataclass
class WithModel:
    customer: Customer
    count: int


class Context:
    """Stands in for a context object in signatures."""


# ----------------------------------------------------------------- round trips

AWARE = datetime(2024, 3, 1, 12, 30, 5, 123456, tzinfo=timezone(timedelta(hours=-5)))
NAIVE = datetime(1999, 12, 31, 23, 59, 59)
GUID = uuid.UUID("12345678-1234-5678-1234-567812345678")

ROUND_TRIPS: list[tuple[str, Any, Any]] = [
    ("int", 42, int),
    ("negative big int", -(2**200) + 7, int),
    ("big int no annotation", 2**64 + 1, None),
    ("float", 0.1, float),
    ("str unicode", "héllo wörld ✓ 中文 🚀", str),
    ("bool", True, bool),
    ("none", None, type(None)),
    ("json nested", {"a": [1, 2.5, {"b": None, "c": [True, "x"]}], "d": {}}, None),
    ("any", {"k": [1, "two"]}, Any),
    ("enum", Color.GREEN, Color),
    ("int enum", Priority.HIGH, Priority),
    ("str enum", Mode.SAFE, Mode),
    ("enum with tuple values", Corner.FAR, Corner),
    ("datetime aware", AWARE, datetime),
    ("datetime naive", NAIVE, datetime),
    ("date", date(2020, 2, 29), date),
    ("time", time(7, 8, 9, 10), time),
    ("time aware", time(7, 8, tzinfo=UTC), time),
    ("timedelta", timedelta(days=-3, seconds=5, microseconds=7), timedelta),
    ("uuid", GUID, uuid.UUID),
    ("decimal exact", Decimal("1.10"), Decimal),
    ("decimal exponent", Decimal("-1.2345678901234567890123456789E+40"), Decimal),
    ("tuple fixed", (1, "a", 2.5), tuple[int, str, float]),
    ("tuple variadic", (1, 2, 3), tuple[int, ...]),
    ("set", {3, 1, 2}, set[int]),
    ("frozenset", frozenset({"b", "a"}), frozenset[str]),
    ("list of dataclasses", [Item("a", 1), Item("b", 2, Decimal("9.99"))], list[Item]),
    ("dict of dataclasses", {"x": Item("x", 3)}, dict[str, Item]),
    ("dict int keys", {1: "one", -20: "minus twenty"}, dict[int, str]),
    ("dict enum keys", {Priority.LOW: 1, Priority.HIGH: 2}, dict[Priority, int]),
    ("dict uuid keys", {GUID: [1]}, dict[uuid.UUID, list[int]]),
    ("optional present", Item("a", 1), Optional[Item]),  # noqa: UP045
    ("optional absent", None, Item | None),
    ("union second member", "text", Union[int, str]),  # noqa: UP007
    ("literal", "b", Literal["a", "b"]),
    ("literal enum", Color.RED, Literal[Color.RED]),
    ("newtype", UserId("u-1"), UserId),
    ("annotated", 5, Annotated[int, "metadata is ignored"]),
    ("nested dataclass", Order(2, [Item("a", 1)], "n", {"t": Item("t", 2)}, Color.GREEN), Order),
    ("frozen slots dataclass", Frozen(AWARE, UserId("bob"), Mode.FAST), Frozen),
    ("recursive dataclass", Node("root", [Node("a", [Node("a1")]), Node("b")]), Node),
    ("generic dataclass", Box(Item("z", 1), [Item("y", 2)]), Box[Item]),
    ("typed dict", Movie(title="Up", year=2009, rating=8.2), Movie),
    ("typed dict missing optional", Movie(title="Up", year=2009), Movie),
    ("typed dict not total", Sparse(color=Color.GREEN), Sparse),
    ("named tuple", Point(1.5, -2.0, "p"), Point),
    ("list of optional", [1, None, 3], list[int | None]),
    ("dict of lists of tuples", {"a": [(1, "x")]}, dict[str, list[tuple[int, str]]]),
]


@pytest.mark.parametrize(
    ("value", "tp"), [pytest.param(v, t, id=name) for name, v, t in ROUND_TRIPS]
)
def test_round_trip(value: Any, tp: Any) -> None:
    text = codec.encode(value)
    assert isinstance(text, str)
    json.loads(text)  # always valid JSON
    back = codec.decode(text, tp)
    assert back == value
    assert type(back) is type(value)
    # the same through the plain-structure functions
    assert codec.from_json_value(codec.to_json_value(value), tp) == value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(None, "null", id="none"),
        pytest.param({"a": 1, "b": [1, 2]}, '{"a":1,"b":[1,2]}', id="compact"),
        pytest.param("é✓", '"é✓"', id="unicode-unescaped"),
        pytest.param(Decimal("1.10"), '"1.10"', id="decimal-string"),
        pytest.param(timedelta(minutes=1, milliseconds=5), "60.005", id="timedelta-seconds"),
        pytest.param({3, 1, 2}, "[1,2,3]", id="set-sorted"),
        pytest.param({Color.GREEN, Color.RED}, '["green","red"]', id="enum-set-sorted-by-value"),
        pytest.param((1, 2), "[1,2]", id="tuple-array"),
        pytest.param(Priority.HIGH, "2", id="int-enum-value"),
        pytest.param(date(2020, 1, 2), '"2020-01-02"', id="date-iso"),
        pytest.param(AWARE, '"2024-03-01T12:30:05.123456-05:00"', id="aware-iso"),
        pytest.param({1: "a"}, '{"1":"a"}', id="int-key-as-string"),
        pytest.param(Item("a", 1), '{"sku":"a","quantity":1,"price":"0"}', id="dataclass-fields"),
        pytest.param(2**70, "1180591620717411303424", id="big-int"),
    ],
)
def test_encoded_text(value: Any, text: str) -> None:
    assert codec.encode(value) == text


def test_plain_json_matches_json_dumps() -> None:
    value = {"z": 1, "a": [1.5, None, True, "ü"], "m": {"n": []}}
    assert codec.encode(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_int_accepted_as_float() -> None:
    out = codec.decode("3", float)
    assert out == 3.0 and type(out) is float
    assert codec.decode("[1, 2]", Point) == Point(1.0, 2.0)
    assert type(codec.decode("[1, 2]", Point).x) is float


def test_bool_is_not_an_int() -> None:
    with pytest.raises(PayloadError, match="as int"):
        codec.decode("true", int)


@pytest.mark.parametrize("value", [0.1, 1e-300, 5e-324, 1.7976931348623157e308, 1 / 3, -2.5e-8])
def test_float_text_is_repr_exact(value: float) -> None:
    assert codec.encode(value) == repr(value)
    assert codec.decode(codec.encode(value), float) == value


def test_negative_zero_keeps_its_sign() -> None:
    assert math.copysign(1.0, codec.decode(codec.encode(-0.0), float)) == -1.0


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**130), max_value=2**130)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value_round_trips(value: Any) -> None:
    text = codec.encode(value)
    assert codec.decode(text) == value
    assert codec.encode(codec.decode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.timedeltas(min_value=timedelta(days=-40000), max_value=timedelta(days=40000)))
def test_timedelta_round_trips_to_the_microsecond(value: timedelta) -> None:
    assert codec.decode(codec.encode(value), timedelta) == value


def test_lone_surrogate_round_trips_as_storable_text() -> None:
    value = {"s": "a\ud800b"}
    text = codec.encode(value)
    text.encode("utf-8")  # storable
    assert codec.decode(text) == value


def test_to_json_value_gives_plain_structures() -> None:
    value = {"o": Order(1, [Item("a", 2)]), "when": date(2021, 5, 6), "ids": {GUID}}
    plain = codec.to_json_value(value)
    assert plain == {
        "o": {
            "quantity": 1,
            "items": [{"sku": "a", "quantity": 2, "price": "0"}],
            "note": None,
            "tags": {},
            "color": "red",
        },
        "when": "2021-05-06",
        "ids": [str(GUID)],
    }
    assert json.loads(json.dumps(plain)) == plain


def test_decode_none_text_means_no_value() -> None:
    assert codec.decode(None) is None
    assert codec.decode(None, Order) is None
    assert codec.decode("null") is None


def test_extra_fields_are_ignored_and_defaults_fill_missing() -> None:
    out = codec.decode('{"quantity": 1, "unknown": 5}', Order)
    assert out == Order(1)


def test_init_false_field_keeps_recorded_value() -> None:
    value = Computed(3)
    value.b = 100
    assert codec.decode(codec.encode(value), Computed).b == 100
    assert codec.decode('{"a": 4}', Computed).b == 8


def test_union_members_are_tried_in_written_order() -> None:
    # int | float and float | int compare equal in Python; each keeps its own order.
    assert codec.decode("[1, 2.5]", list[float | int]) == [1.0, 2.5]
    assert type(codec.decode("[1, 2.5]", list[float | int])[0]) is float
    assert type(codec.decode("[1, 2.5]", list[int | float])[0]) is int


def test_pydantic_model_round_trip() -> None:
    value = Customer(
        id=GUID,
        name="Zoë",
        since=AWARE,
        credit=Decimal("12.50"),
        address=Address(city="Köln", zip="50667"),
        tags=["a"],
    )
    assert codec.decode(codec.encode(value), Customer) == value
    assert codec.decode(codec.encode([value]), list[Customer]) == [value]
    inside = WithModel(value, 2)
    assert codec.decode(codec.encode(inside), WithModel) == inside


def test_pydantic_mismatch_names_the_field() -> None:
    text = '{"customer": {"id": "not-a-uuid", "name": "x", "since": "2020-01-01",'
    text += ' "credit": "1", "address": {"city": "c", "zip": "z"}}, "count": 1}'
    with pytest.raises(PayloadError) as info:
        codec.decode(text, WithModel)
    assert "'not-a-uuid'" in str(info.value)
    assert ".customer.id" in str(info.value)
    assert "UUID" in str(info.value)


def test_pydantic_missing_field_is_named() -> None:
    with pytest.raises(PayloadError) as info:
        codec.decode('[{"address": {}}]', list[Reading])
    assert str(info.value) == (
        "cannot decode {} as Measure at [0].address (list[Reading]): missing required field 'x'"
    )


def test_codec_import_does_not_import_pydantic() -> None:
    script = (
        "import sys, dataclasses\n"
        "from duroxy import codec\n"
        "@dataclasses.dataclass\n"
        "class A:\n"
        "    x: int\n"
        "assert codec.decode(codec.encode(A(1)), A) == A(1)\n"
        "print('pydantic' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_encoding_is_deterministic() -> None:
    a = {"b": {"y", "x", "z"}, "a": frozenset({3, 1}), "c": Order(1)}
    b = {"b": {"z", "x", "y"}, "a": frozenset({1, 3}), "c": Order(1)}
    assert codec.encode(a) == codec.encode(b) == codec.encode(a)
    assert codec.encode(a).startswith('{"b":["x","y","z"],"a":[1,3]')
    assert codec.encode({"z": 1, "a": 2}) == '{"z":1,"a":2}'  # insertion order kept


# ----------------------------------------------------------------- encode errors


def _closed_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.close()
    return sock


@pytest.mark.parametrize(
    ("make", "type_name", "where"),
    [
        pytest.param(lambda: object(), "'object'", "", id="object"),
        pytest.param(lambda: {"f": lambda: 1}, "'function'", " at .f", id="lambda"),
        pytest.param(
            lambda: {"items": [1, 2, {"conn": _closed_socket()}]},
            "'socket'",
            " at .items[2].conn",
            id="socket",
        ),
        pytest.param(lambda: [Item("a", b"x")],  # type: ignore[arg-type]
                     "'bytes'", " at [0].quantity", id="bytes-field"),
        pytest.param(lambda: {"k": {1: {2: object()}}}, "'object'", " at .k['1']['2']", id="keys"),
        pytest.param(lambda: {"s": {object()}}, "'object'", " at .s[0]", id="set-element"),
        pytest.param(lambda: [{object(), object()}], "'object'", " at [0][*]", id="unordered-set"),
    ],
)
def test_unencodable_value_names_type_and_path(make: Any, type_name: str, where: str) -> None:
    with pytest.raises(PayloadError) as info:
        codec.encode(make())
    message = str(info.value)
    assert f"cannot encode value of type {type_name}{where}: no JSON form" == message


def test_unencodable_path_starts_at_the_given_name() -> None:
    with pytest.raises(PayloadError) as info:
        codec.encode({"items": [0, 1, {"conn": _closed_socket()}]}, path="input")
    assert str(info.value) == (
        "cannot encode value of type 'socket' at input.items[2].conn: no JSON form"
    )


def test_payload_error_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        codec.encode(object())


@pytest.mark.parametrize(
    ("value", "where"),
    [
        pytest.param(float("nan"), "", id="top"),
        pytest.param({"a": [1.0, float("inf")]}, " at .a[1]", id="nested-inf"),
        pytest.param(Point(float("-inf"), 0.0), " at [0]", id="named-tuple"),
    ],
)
def test_nan_and_infinity_are_rejected(value: Any, where: str) -> None:
    with pytest.raises(PayloadError, match=rf"type 'float'{re.escape(where)}: -?(nan|inf)"):
        codec.encode(value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param({1, "a"}, "no total order", id="mixed-set"),
        pytest.param({frozenset({1}), frozenset({2})}, "no total order", id="partial-order"),
        pytest.param({True: 1}, "dict key True", id="bool-key"),
        pytest.param({(1, 2): 1}, "dict key (1, 2)", id="tuple-key"),
        pytest.param({1: "a", "1": "b"}, "same JSON key", id="key-collision"),
    ],
)
def test_values_without_a_deterministic_json_form(value: Any, fragment: str) -> None:
    with pytest.raises(PayloadError, match=re.escape(fragment)):
        codec.encode(value)


def test_cyclic_value_is_rejected() -> None:
    value: list[Any] = [1]
    value.append(value)
    with pytest.raises(PayloadError, match="contains itself"):
        codec.encode(value)


def test_pydantic_nan_is_rejected_with_path() -> None:
    with pytest.raises(PayloadError, match=r"type 'float' at \.address\.x: nan has no JSON"):
        codec.encode(Reading(address=Measure(x=math.nan)))


# ----------------------------------------------------------------- decode errors


@pytest.mark.parametrize(
    ("text", "tp", "message"),
    [
        pytest.param(
            '{"quantity": "abc"}', Order, "cannot decode 'abc' as int at .quantity (Order)"
        ),
        pytest.param(
            '{"quantity": 1, "items": [{"sku": "a", "quantity": 1}, {"sku": 5, "quantity": 1}]}',
            Order,
            "cannot decode 5 as str at .items[1].sku (Order)",
        ),
        pytest.param(
            '{"quantity": 1, "tags": {"my tag": {"sku": "a"}}}',
            Order,
            "cannot decode {'sku': 'a'} as Item at .tags['my tag'] (Order): "
            "missing required field 'quantity'",
        ),
        pytest.param(
            '{"quantity": 1, "color": "blue"}',
            Order,
            "cannot decode 'blue' as Color at .color (Order): not a value of Color",
        ),
        pytest.param('[1, "x"]', list[int], "cannot decode 'x' as int at [1] (list[int])"),
        pytest.param(
            '{"1": "a", "b": "c"}',
            dict[int, str],
            "cannot decode 'b' as int at .b (dict[int, str]): dict key is not an integer",
        ),
        pytest.param('"x"', Order, "cannot decode 'x' as Order: expected a JSON object"),
        pytest.param('"c"', Literal["a", "b"], "cannot decode 'c' as Literal['a', 'b']"),
        pytest.param(
            "[1.5]",
            list[int | str],
            "cannot decode 1.5 as int | str at [0] (list[int | str]): no member of the union fits",
        ),
        pytest.param('"2020-13-01"', date, "cannot decode '2020-13-01' as date: expected an ISO"),
        pytest.param('"nope"', uuid.UUID, "cannot decode 'nope' as UUID"),
        pytest.param('"1.2.3"', Decimal, "cannot decode '1.2.3' as Decimal"),
        pytest.param("[1, 2]", tuple[int, int, int], "expected a JSON array of 3 items"),
        pytest.param('{"title": "x"}', Movie, "missing required key 'year'"),
        pytest.param('{"n": -1}', Positive, "Positive() raised ValueError: n must be positive"),
        pytest.param("1", type(None), "cannot decode 1 as None"),
        pytest.param(
            '{"value": 1, "values": [2, "x"]}',
            Box[int],
            "cannot decode 'x' as int at .values[1] (Box[int])",
        ),
    ],
)
def test_mismatched_decode_names_type_and_path(text: str, tp: Any, message: str) -> None:
    with pytest.raises(PayloadError) as info:
        codec.decode(text, tp)
    assert message in str(info.value)


def test_decode_path_starts_at_the_given_name() -> None:
    with pytest.raises(PayloadError) as info:
        codec.decode('{"quantity": "abc"}', Order, path="input")
    assert str(info.value) == "cannot decode 'abc' as int at input.quantity (Order)"


@pytest.mark.parametrize("text", ["", "{", "NaN", "[Infinity]", '{"a": 1} x', "-Infinity"])
def test_invalid_json_is_rejected(text: str) -> None:
    with pytest.raises(PayloadError, match="invalid JSON"):
        codec.decode(text)


def test_unsupported_annotation_is_reported() -> None:
    from collections.abc import Callable

    with pytest.raises(PayloadError, match="no decoding for annotation"):
        codec.decode("1", Callable[[int], int])


# ----------------------------------------------------------------- function types


async def async_activity(ctx: ActivityContext, input: Order) -> list[Item]:
    return input.items


def sync_activity(ctx: Context, input: dict[str, Frozen]) -> None:
    return None


def no_annotations(ctx, input):  # type: ignore[no-untyped-def]
    return input


def single_parameter(ctx: Context) -> int:
    return 1


def with_options(ctx: Context, input: Point, *, scale: float = 1.0) -> Point:
    return input


def declares_awaitable(ctx: Context, input: int) -> Awaitable[Item]:
    raise NotImplementedError


def declares_coroutine(ctx: Context, input: int) -> Coroutine[Any, Any, Order | None]:
    raise NotImplementedError


def traced(fn: Any) -> Any:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    return wrapper


class Activities:
    async def handle(self, ctx: Context, input: Movie) -> Mode:
        return Mode.FAST

    async def __call__(self, ctx: Context, input: Box[int]) -> Sparse:
        return Sparse()


@pytest.mark.parametrize(
    ("fn", "input_type", "output_type"),
    [
        pytest.param(async_activity, Order, list[Item], id="async"),
        pytest.param(sync_activity, dict[str, Frozen], type(None), id="sync-none"),
        pytest.param(no_annotations, None, None, id="unannotated"),
        pytest.param(single_parameter, None, int, id="single-parameter"),
        pytest.param(functools.partial(with_options, scale=2.0), Point, Point, id="partial"),
        pytest.param(Activities().handle, Movie, Mode, id="bound-method"),
        pytest.param(Activities(), Box[int], Sparse, id="callable-object"),
        pytest.param(declares_awaitable, int, Item, id="awaitable"),
        pytest.param(declares_coroutine, int, Order | None, id="coroutine"),
        pytest.param(traced(async_activity), Order, list[Item], id="wrapped"),
        pytest.param(print, None, None, id="builtin"),
    ],
)
def test_function_types(fn: Any, input_type: Any, output_type: Any) -> None:
    assert codec.input_type_of(fn) == input_type
    assert codec.output_type_of(fn) == output_type


def test_unresolvable_input_annotation_is_an_error() -> None:
    def activity(ctx: Context, input: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
        return None

    with pytest.raises(PayloadError, match="NoSuchType"):
        codec.input_type_of(activity)


def test_resolved_types_decode_the_payload() -> None:
    text = codec.encode(Order(2, [Item("a", 1)]))
    assert codec.decode(text, codec.input_type_of(async_activity)) == Order(2, [Item("a", 1)])
    out = codec.decode('[{"sku": "b", "quantity": 2}]', codec.output_type_of(async_activity))
    assert out == [Item("b", 2)]


def test_dataclass_fields_resolve_from_string_annotations() -> None:
    assert isinstance(Order.__dataclass_fields__["items"].type, str)  # future annotations
    hints = {f.name: f.type for f in dataclasses.fields(Frozen)}
    assert hints["mode"] == "Mode | None"
    assert codec.decode('{"when": "2020-01-01T00:00:00Z", "who": "a"}', Frozen) == Frozen(
        datetime(2020, 1, 1, tzinfo=UTC), UserId("a")
    )
