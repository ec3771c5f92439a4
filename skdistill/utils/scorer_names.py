"""Make a scorer usable by name (``scoring="mean_iou"``) in scikit-learn's searches.

scikit-learn resolves scoring strings through its private ``_SCORERS`` table, and every
function or class that takes ``scoring`` checks the string against a set of names copied
from that table when its module was imported (``StrOptions(set(get_scorer_names()))``).
There is no public registry (scikit-learn issue #17168), so :func:`register_scorer_name`
does the two things such a registry would do:

1. it adds the scorer to ``sklearn.metrics._scorer._SCORERS``, so that
   :func:`sklearn.metrics.get_scorer` returns it and modules imported from now on copy the
   name into their accepted sets;
2. it adds the name to the accepted sets already built by imported ``sklearn`` modules,
   found in the classes' ``_parameter_constraints`` and the validated functions'
   ``_skl_parameter_constraints`` (where scikit-learn keeps them for introspection).

If a future scikit-learn moves these internals, nothing is changed and the function
returns ``False``: the scorer object itself (``scoring=mean_iou_scorer``) keeps working.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator

__all__ = ["register_scorer_name"]

#: Names every scoring-name set of scikit-learn contains; a ``StrOptions`` holding them is
#: one of those sets (and not, say, a set of solver names).
_SCORER_SET_MARKERS = frozenset({"accuracy", "neg_mean_squared_error", "r2"})


def register_scorer_name(name: str, scorer: Callable) -> bool:
    """Let ``scoring=name`` select ``scorer`` wherever scikit-learn accepts a scoring string.

    Parameters
    ----------
    name : str
        The scoring string, e.g. ``"mean_iou"``.
    scorer : callable
        A scorer ``scorer(estimator, X, y)``, as made by :func:`sklearn.metrics.make_scorer`.

    Returns
    -------
    bool
        ``True`` if the name is now accepted; ``False`` if this scikit-learn does not have
        the internals described in the module docstring, or already has its own scorer
        under ``name`` (which is then left as it is).
    """
    try:
        from sklearn.metrics import _scorer
        from sklearn.utils._param_validation import StrOptions
    except ImportError:
        return False
    table = getattr(_scorer, "_SCORERS", None)
    if not isinstance(table, dict):
        return False
    if table.get(name, scorer) is not scorer:
        return False
    table[name] = scorer
    for options in _imported_scorer_name_sets(StrOptions):
        options.add(name)
    return True


def _imported_scorer_name_sets(str_options_type: type) -> Iterator[set]:
    """Yield the accepted-scoring-name sets of the ``sklearn`` modules imported so far."""
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith("sklearn."):
            continue
        for obj in list(vars(module).values()):
            for constraints in _parameter_constraints(obj):
                for constraint in _flatten(constraints.values()):
                    options = getattr(constraint, "options", None)
                    if (
                        isinstance(constraint, str_options_type)
                        and isinstance(options, set)
                        and _SCORER_SET_MARKERS <= options
                    ):
                        yield options


def _parameter_constraints(obj: object) -> Iterator[dict]:
    """The constraint tables scikit-learn attaches to estimator classes and functions."""
    if inspect.isclass(obj):
        tables = [vars(klass).get("_parameter_constraints") for klass in obj.__mro__]
    elif callable(obj):
        tables = [getattr(obj, "_skl_parameter_constraints", None)]
    else:
        return
    for table in tables:
        if isinstance(table, dict):
            yield table


def _flatten(values) -> Iterator[object]:
    for value in values:
        if isinstance(value, list | tuple):
            yield from value
        else:
            yield value
