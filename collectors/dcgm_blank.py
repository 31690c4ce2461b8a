"""DCGM's "no value" sentinels, recognised column-wise.

DCGM (dcgm_structs.h) marks a field it cannot read with a blank value instead
of leaving it out, and dcgm-exporter prints it as if it were a reading:

| type   | blank (base)           | +1 NOT_FOUND, +2 NOT_SUPPORTED, +3 NOT_PERMISSIONED |
| int32  | 0x7ffffff0 = 2147483632 | 2147483633 .. 2147483635 |
| int64  | 0x7ffffffffffffff0 = 9223372036854775792 | ... 9223372036854775795 |
| fp64   | 2**47 = 140737488355328.0 | ... 140737488355331.0 |
| string | "<<<NULL>>>" | "<<<NOT_FOUND>>>", "<<<NOT_SUPPORTED>>>", "<<<NOT_PERM>>>" |

The windows are the four defined values (base .. base+3), as dcgm-exporter's
own isInt64Blank / isFloat64Blank check them (internal/pkg/collector/utils.go).
Every int64 blank parses to the same double, 2**63 (9223372036854775794 ->
9.223372036854776e18): any value >= 2**63 - 1024 (the double just below 2**63
is 2**63 - 1024) cannot be a real int64 reading and is blank. Exposition has no
types, so all three windows are checked on every DCGM sample; the int32 and
fp64 windows are 4 values wide, so a real counter landing exactly on one is
negligible.
"""

from __future__ import annotations

import numpy as np

INT32_BLANK = 2147483632.0
INT64_BLANK = 9223372036854775792.0  # as a double: exactly 2**63
INT64_BLANK_MIN = 2.0**63 - 1024  # any double this large is an int64 blank
FP64_BLANK = 140737488355328.0
BLANK_SPAN = 3.0  # base .. base+3: BLANK, NOT_FOUND, NOT_SUPPORTED, NOT_PERMISSIONED
STR_BLANKS = frozenset(("<<<NULL>>>", "<<<NOT_FOUND>>>", "<<<NOT_SUPPORTED>>>", "<<<NOT_PERM>>>"))


def blank_mask(values: np.ndarray) -> np.ndarray:
    """True where a DCGM value is a blank sentinel (not a reading)."""
    v = np.asarray(values, dtype=np.float64)
    return (
        (v >= INT64_BLANK_MIN)
        | ((v >= INT32_BLANK) & (v <= INT32_BLANK + BLANK_SPAN))
        | ((v >= FP64_BLANK) & (v <= FP64_BLANK + BLANK_SPAN))
    )


def label_value(labels, key: str) -> str | None:
    """A label's value, None when absent, empty or a DCGM string blank."""
    v = labels.get(key)
    if not v or (v.startswith("<<<") and v in STR_BLANKS):
        return None
    return v


# Boards whose memory is HBM have a memory temperature sensor; the others
# (GDDR: T4, L4, L40/L40S, A10/A16/A40, RTX/Quadro, ...) report MEMORY_TEMP 0,
# which means "no sensor", not 0 degC.
HBM_MODEL_KEYS = (
    "A100",
    "A800",
    "A30",
    "H100",
    "H800",
    "H200",
    "H20",
    "GH200",
    "B100",
    "B200",
    "B300",
    "GB200",
    "GB300",
    "V100",
    "P100",
)


def has_hbm(model: str | None) -> bool | None:
    """True for an HBM board, False for a known non-HBM one, None when the model is unknown."""
    if not model:
        return None
    m = model.upper()
    return any(k in m for k in HBM_MODEL_KEYS)
