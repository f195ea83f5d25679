"""Speech encoders: our own Flax modules reading real checkpoint files, plus classical features.

Every encoder module exposes a config dataclass, its module, and a `load`/builder; `registry` maps the
paper's names to them. Encoders know nothing about emotions.
"""
