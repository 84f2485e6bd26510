"""The GR00T policy server's wire format (spec §9.1): msgpack messages whose numpy arrays and modality
configs travel in one of two encodings seen in GR00T releases.

- `npsave` (N1.6 era): an array is `{"__ndarray_class__": True, "as_npy": <np.save bytes>}`, a modality
  config `{"__ModalityConfig_class__": True, "as_json": {...}}`.
- `msgpack-numpy` (N1.7 era): an array is the msgpack-numpy library's map `{b"nd": True, b"type": dtype
  str, b"kind": b"", b"shape": [...], b"data": <raw bytes>}` (bytes keys as that library writes them; str
  keys are read too), a modality config `{"__ModalityConfig__": True, "as_json": {...} or JSON string}`.

Decoding reads both and reports which one the sender used (from its arrays, or from its modality-config
markers when it sent no array), so a server can answer in kind and a client can settle on the server's
era; object and structured dtypes are refused (they would need pickle). `npy` is accepted as another name
for `npsave`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from svms.errors import SvmsError

NPY = "npsave"
MSGPACK_NUMPY = "msgpack-numpy"
WIRE_FORMS = (NPY, MSGPACK_NUMPY)
#: What each form is called in messages: the era and how arrays look.
WIRE_NAMES = {NPY: "npsave (N1.6 era, np.save bytes)", MSGPACK_NUMPY: "msgpack-numpy (current era)"}
_ALIASES = {"npy": NPY}
NPY_MARKER = "__ModalityConfig_class__"
ND_MARKER = "__ModalityConfig__"


class WireError(SvmsError):
    """A message that is not valid msgpack or holds an array that cannot be rebuilt."""


@dataclass(frozen=True)
class Wire:
    """How arrays are written: `form` is `npsave` or `msgpack-numpy`; `bytes_keys` only matters for the
    latter (the msgpack-numpy library writes bytes keys; some hand-written clients use str keys)."""

    form: str = NPY
    bytes_keys: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "form", _ALIASES.get(self.form, self.form))
        if self.form not in WIRE_FORMS:
            raise SvmsError(f"unknown wire form {self.form!r}; expected one of {list(WIRE_FORMS)}")


def other_form(form: str) -> str:
    """The other era's array form."""
    return MSGPACK_NUMPY if Wire(form).form == NPY else NPY


def _field(d: Mapping, name: str) -> Any:
    """A msgpack-numpy field under its str or bytes key (KeyError names the field)."""
    if name in d:
        return d[name]
    if name.encode() in d:
        return d[name.encode()]
    raise KeyError(name)


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _npy_array(d: Mapping) -> np.ndarray:
    data = d.get("as_npy")
    if not isinstance(data, bytes):
        raise WireError("an __ndarray_class__ map needs 'as_npy' bytes written by np.save")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise WireError(f"'as_npy' bytes are not a valid .npy array ({err})") from None


def _nd_array(d: Mapping) -> np.ndarray | np.generic:
    try:
        kind = _text(d.get("kind", d.get(b"kind", b"")))
        if kind in ("V", "O"):
            raise WireError(f"msgpack-numpy array of dtype kind {kind!r} refused: object and structured "
                            "arrays would need pickle; send plain numeric arrays")
        dtype = np.dtype(_text(_field(d, "type")))
        data = _field(d, "data")
        if _field(d, "nd") is not True:  # a numpy scalar
            return np.frombuffer(data, dtype=dtype)[0]
        shape = tuple(int(n) for n in _field(d, "shape"))
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    except KeyError as err:
        raise WireError(f"msgpack-numpy array map lacks field {err}; expected nd, type, kind, shape, "
                        "data") from None
    except (TypeError, ValueError) as err:
        raise WireError(f"msgpack-numpy array cannot be rebuilt ({err}); check type, shape and data "
                        "length") from None


def _modality_json(d: Mapping) -> dict:
    raw = d.get("as_json")
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as err:
            raise WireError(f"modality config 'as_json' is not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise WireError("a modality config marker needs 'as_json', a map or a JSON string")
    return raw


def decode(payload: bytes) -> tuple[Any, Wire | None]:
    """Unpack a message; arrays become numpy arrays, modality-config markers their `as_json` dicts.

    Returns the object and the `Wire` of its first array; without arrays, the era of its modality-config
    markers when they name one era only; else None.
    """
    seen: list[Wire] = []
    markers: set[str] = set()

    def hook(d: dict) -> Any:
        if d.get("__ndarray_class__") is True:
            seen.append(Wire(NPY))
            return _npy_array(d)
        nd = d.get("nd", d.get(b"nd"))
        if nd is True or (nd is False and ("type" in d or b"type" in d)):
            seen.append(Wire(MSGPACK_NUMPY, bytes_keys=b"nd" in d))
            return _nd_array(d)
        if d.get(NPY_MARKER) is True or d.get(ND_MARKER) is True:
            markers.update(m for m in (NPY_MARKER, ND_MARKER) if d.get(m) is True)
            return _modality_json(d)
        return d

    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False, object_hook=hook)
    except WireError:
        raise
    except Exception as err:  # msgpack raises many unrelated types on garbage input
        raise WireError(f"message is not valid msgpack ({type(err).__name__}: {err})") from None
    if seen:
        return obj, seen[0]
    if markers == {NPY_MARKER}:
        return obj, Wire(NPY)
    if markers == {ND_MARKER}:
        return obj, Wire(MSGPACK_NUMPY)
    return obj, None


def peek_fields(payload: bytes | memoryview, names: tuple[str, ...]) -> dict[str, Any]:
    """The top-level map's `names` fields (the last of repeated keys, as `decode` would keep), read by one
    streaming pass that skips every other value without building it: no array is rebuilt and no nested
    object is made, so a request can be refused (a wrong `api_token`) before its observation is decoded."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(payload), 1))
    unpacker.feed(payload)
    try:
        entries = unpacker.read_map_header()
    except Exception:  # not a map, or not msgpack at all
        raise WireError("a request must be a msgpack map {endpoint, data, api_token}; this message does not "
                        "start with one") from None
    found: dict[str, Any] = {}
    try:
        for _ in range(entries):
            key = unpacker.unpack()
            if isinstance(key, str) and key in names:
                found[key] = unpacker.unpack()
            else:
                unpacker.skip()
    except Exception as err:
        raise WireError(f"message is not valid msgpack ({type(err).__name__}: {err})") from None
    return found


def _array_encoder(wire: Wire) -> Callable[[Any], Any]:
    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind in "VO":
                raise WireError(f"cannot send an array of dtype {obj.dtype}; only plain numeric arrays")
            if wire.form == NPY:
                buf = io.BytesIO()
                np.save(buf, obj, allow_pickle=False)
                return {"__ndarray_class__": True, "as_npy": buf.getvalue()}
            fields = {"nd": True, "type": obj.dtype.str, "kind": b"" if wire.bytes_keys else "",
                      "shape": list(obj.shape), "data": np.ascontiguousarray(obj).tobytes()}
            return {(k.encode() if wire.bytes_keys else k): v for k, v in fields.items()}
        if isinstance(obj, np.generic):
            return obj.item()
        raise TypeError(f"cannot send an object of type {type(obj).__name__}")

    return default


def encode(obj: Any, wire: Wire = Wire()) -> bytes:
    """Pack a message, writing numpy arrays in `wire`'s form and numpy scalars as plain numbers."""
    return msgpack.packb(obj, default=_array_encoder(wire), use_bin_type=True)


def modality_marker(config: Mapping[str, Any], markers: tuple[str, ...] = (NPY_MARKER, ND_MARKER)) -> dict:
    """A modality config (`ModalityConfig.to_dict()`) as the marker map a GR00T client decodes.

    Carrying both eras' marker keys lets either era's client read it without the server knowing which
    one is asking; `as_json` is a map, which both eras accept.
    """
    return {**{m: True for m in markers}, "as_json": dict(config)}
