"""One place that turns "is this a real integer / a real number / a finite array?" into a clear
message, shared by the envs, the QMP wrappers, the replay buffers and the evaluation.

Every entry point accepts the same values: Python and NumPy integers where a count is asked for,
Python and NumPy integers and floats where a number is, arrays of any real dtype (and torch
tensors, with or without ``requires_grad``) where an array is. It refuses the same values with
one kind of message (what was given, what is allowed, how to fix it): a ``bool`` as a count, a
string or a complex number, a boolean or complex array, NaN or inf.

>>> integer("hold_steps", np.int64(2), minimum=1)
2
>>> real("temperature", np.float32(0.5), above=0)
0.5
>>> integer("num_envs", True, minimum=1)
Traceback (most recent call last):
...
qmp_envs.validation.InputTypeError: num_envs must be an integer >= 1, got True (a bool is not a \
number here)
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


class InputError(ValueError):
    """A value outside what an entry point allows."""


class InputTypeError(InputError, TypeError):
    """A value of the wrong kind (a bool for a count, a string, a complex number). Both a
    ``TypeError`` and a ``ValueError``, so callers that catch either one see it."""


def _range_text(minimum: float | None, maximum: float | None, above: float | None) -> str:
    parts = []
    if above is not None:
        parts.append(f"> {above}")
    if minimum is not None:
        parts.append(f">= {minimum}")
    if maximum is not None:
        parts.append(f"<= {maximum}")
    return " and ".join(parts)


def _refuse_bool(name: str, value: Any, kind: str) -> None:
    if isinstance(value, bool | np.bool_):
        raise InputTypeError(f"{name} must be {kind}, got {value!r} (a bool is not a number here)")


def integer(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    integral_floats: bool = False,
) -> int:
    """``value`` as a Python int: an ``int`` or NumPy integer (never a ``bool``) within the bounds.

    Args:
        name: how the message names the value (an argument or option name).
        value: the value to check.
        minimum: the smallest allowed value, if any.
        maximum: the largest allowed value, if any.
        integral_floats: also accept floats with an integral value (``5e3``): CleanRL's scripts
            give step counts as floats.

    Returns:
        The value as a Python ``int``.

    Raises:
        InputTypeError: ``value`` is not an integer (a bool, a string, a fractional float).
        InputError: ``value`` is outside the bounds.
    """
    bounds = _range_text(minimum, maximum, None)
    kind = "an integer" + (f" {bounds}" if bounds else "")
    _refuse_bool(name, value, kind)
    if integral_floats and isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    if not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be {kind}, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InputError(f"{name} must be {kind}, got {value!r}")
    return value


def real(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
) -> float:
    """``value`` as a finite Python float: an int, float or NumPy number (never a ``bool``).

    Args:
        name: how the message names the value.
        value: the value to check.
        minimum: the smallest allowed value, if any.
        above: a bound the value must exceed strictly, if any.
        maximum: the largest allowed value, if any.

    Returns:
        The value as a Python ``float``.

    Raises:
        InputTypeError: ``value`` is not a real number (a bool, a string, a complex number).
        InputError: ``value`` is NaN, infinite or outside the bounds.
    """
    bounds = _range_text(minimum, maximum, above)
    kind = "a finite number" + (f" {bounds}" if bounds else "")
    _refuse_bool(name, value, kind)
    if not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be {kind}, got {value!r}")
    number = float(value)
    if (
        not math.isfinite(number)
        or (minimum is not None and number < minimum)
        or (above is not None and number <= above)
        or (maximum is not None and number > maximum)
    ):
        raise InputError(f"{name} must be {kind}, got {value!r}")
    return number


def seed(name: str, value: Any) -> int | None:
    """A seed as Gymnasium and NumPy take it: ``None`` or a Python int >= 0 (NumPy integers are
    converted, as Gymnasium itself refuses them).

    Args:
        name: how the message names the seed.
        value: the seed given.

    Returns:
        None or the seed as a Python ``int``.

    Raises:
        InputTypeError: ``value`` is not an integer.
        InputError: ``value`` is negative.
    """
    return None if value is None else integer(name, value, minimum=0)


def real_array(
    name: str,
    value: Any,
    *,
    dtype: Any = np.float64,
    shape: tuple[int, ...] | None = None,
    context: str = "",
) -> np.ndarray:
    """``value`` as a finite array of ``dtype``, from any real array-like or torch tensor.

    Integer dtypes are accepted (they are real numbers); boolean, complex, string and object
    arrays are refused rather than cast (a complex value would lose its imaginary part, a
    boolean array would turn into 0 and 1 silently). A torch tensor is detached and copied to
    the CPU first, so one that ``requires_grad`` is accepted.

    Args:
        name: how the message names the array (``"action"``).
        value: the array-like to check.
        dtype: the dtype of the returned array; None keeps the given one.
        shape: the required shape, if any.
        context: appended to every message (e.g. ``" for PointReachEnv"``).

    Returns:
        ``np.asarray(value, dtype=dtype)`` (no copy where ``value`` is already such an array).

    Raises:
        InputTypeError: ``value`` is not an array of real numbers.
        InputError: ``value`` has the wrong shape, or NaN or inf entries.
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor (no torch import)
        value = value.detach().cpu()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputTypeError(
            f"{name} must be an array of real numbers, got {type(value).__name__}{context}"
        ) from err
    kind = array.dtype.kind
    if kind == "b":
        raise InputTypeError(
            f"{name} is a boolean array{context}: give real numbers (e.g. "
            "array.astype(np.float32)); booleans are not cast to 0 and 1 silently"
        )
    if kind == "c":
        raise InputTypeError(
            f"{name} is a complex array ({array.dtype}){context}: give real numbers; the "
            "imaginary part is not dropped silently"
        )
    if kind not in "iuf":
        raise InputTypeError(
            f"{name} must be an array of real numbers, got {type(value).__name__} of dtype "
            f"{array.dtype}{context}"
        )
    if shape is not None and array.shape != tuple(shape):
        raise InputError(f"{name} has shape {array.shape}, expected {tuple(shape)}{context}")
    if dtype is not None:
        array = np.asarray(array, dtype=dtype)
    if kind == "f" and not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or inf{context}: {non_finite_text(array)}")
    return array


def non_finite_text(array: np.ndarray) -> str:
    """Where an array's first NaN or inf is, for an error message.

    Args:
        array: an array with at least one NaN or inf.

    Returns:
        e.g. ``"inf at index (0, 3) (2 of 12 entries)"``.

    Example:
        >>> non_finite_text(np.array([[1.0, np.nan], [np.inf, 0.0]]))
        'nan at index (0, 1) (2 of 4 entries)'
    """
    bad = ~np.isfinite(array)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    index = first[0] if len(first) == 1 else first
    return f"{array[first]} at index {index} ({int(bad.sum())} of {array.size} entries)"
