"""The strictness every config section is declared with: no unknown keys, no NaN or infinity, and scalars that are
never coerced (``"3"`` is not an int, ``1`` is not a bool).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Strict

# NaN and infinity are never a valid setting: a NaN weight trains nothing, and NaN != NaN would make
# the run's own config differ from itself when a resumed run is compared with the saved one.
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
# Strict scalars: "3" is not an int and 1 is not a bool (YAML typos surface as errors, not coercions).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]
