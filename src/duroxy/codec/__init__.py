"""Payloads as JSON text, decoded back to the types their annotations name.

Orchestration and activity inputs and outputs, event data and custom statuses are
stored as JSON text. ``encode`` turns a value into that text; ``decode`` parses it and,
given an annotation, rebuilds the annotated type:

* dataclass, TypedDict, pydantic v2 model: JSON object (NamedTuple: array);
* Enum, IntEnum, StrEnum: the member's value;
* datetime, date, time: ISO 8601 text (naive stays naive, aware keeps its offset);
* timedelta: seconds as a float; UUID and Decimal: text (Decimal exact);
* tuple, list, set, frozenset: array; dict: object with str keys (int keys are
  written as text and read back as int when annotated ``dict[int, T]``).

Invariants:

* Encoding is deterministic: the same value always gives the same text. Dicts keep
  insertion order; sets are sorted, and a set without a total order is refused.
* A value without a JSON form (an object, a function, bytes, NaN) raises
  :class:`PayloadError` naming its type and its path inside the value; so does a
  value that does not fit its annotation, naming the expected type and the path.
* No payload is bigger than ``MAX_PAYLOAD_BYTES`` (16 MiB) of UTF-8 JSON: ``encode``
  refuses a bigger one with :class:`PayloadError`, before anything is stored.
* pydantic is never imported here: a pydantic model exists only once its user has
  imported pydantic, so the codec finds it in ``sys.modules``.

Speed: plain JSON structures go straight to the C encoder, and each annotation's
decoding plan (one function) is built once and cached.

Layout: ``_encode`` (values to text), ``_decode`` (the decoding plans, text to
values), ``_annotations`` (the types a function's annotations name), and ``_common``,
what they share (the failure carrier, type and path naming, pydantic detection, the
JSON writer that history records use too).
"""

from .._limits import MAX_PAYLOAD_BYTES
from ._annotations import input_type_of, output_type_of, remember_scope
from ._decode import decode, from_json_value
from ._encode import encode, to_json_value

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "decode",
    "encode",
    "from_json_value",
    "input_type_of",
    "output_type_of",
    "remember_scope",
    "to_json_value",
]
