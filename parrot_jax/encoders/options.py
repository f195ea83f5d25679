"""Encoder options: what changes an embedding, apart from how it is computed.

Each encoder family declares two small frozen dataclasses:

- its *embedding options* (layer or layer mix, pooling, token order, number of MFCCs, ...): they change
  the numbers, so the feature store records them, they are part of a feature set's identity, and
  `predict` rebuilds the encoder with them;
- its *run options* (batch size, bucket ratio, compilation-cache folder, scan algorithm, chunk batch):
  how the same numbers are computed; recorded for information, never part of identity.

`split` sorts keyword options into the two, refusing unknown names in one line that lists both kinds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from parrot_jax.text_values import field_names


@dataclass(frozen=True)
class NoOptions:
    """The options of an encoder with nothing to set."""


def known(embedding: type, running: type) -> str:
    """The option names of a family in words, e.g. "layer, pooling (embedding); batch_size (run)"."""
    parts = [f"{', '.join(names)} ({kind})" for names, kind in
             ((field_names(embedding), "embedding"), (field_names(running), "run")) if names]
    return "; ".join(parts) if parts else "none"


def split(encoder: str, options: Mapping[str, Any], embedding: type, running: type) -> tuple[Any, Any]:
    """(embedding options, run options) of keyword `options`; a ValueError naming `encoder` and what it
    takes where a name is unknown (the dataclasses check the values)."""
    unknown = sorted(set(options) - set(field_names(embedding)) - set(field_names(running)))
    if unknown:
        raise ValueError(f"encoder {encoder!r}: unknown option {', '.join(unknown)}; it takes "
                         f"{known(embedding, running)}")
    try:
        return tuple(cls(**{k: v for k, v in options.items() if k in field_names(cls)}) for cls in (embedding, running))
    except (ValueError, TypeError) as error:
        raise ValueError(f"encoder {encoder!r}: {error}") from None


def to_json(options: Any) -> dict[str, Any]:
    """An options dataclass as JSON (tuples as lists)."""
    return json.loads(json.dumps(asdict(options)))
