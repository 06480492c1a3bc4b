"""Progress reporting shared by long steps: a callback for the dashboard, tqdm for the terminal."""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Optional

# ``progress(done, total, message)``; every long function takes one (None = silent).
ProgressFn = Optional[Callable[[int, int, str], None]]
_open_bars: weakref.WeakSet = weakref.WeakSet()  # tqdm bars not closed yet


def tqdm_progress(desc: str, unit: str = "it") -> Callable[[int, int, str], None]:
    """A progress callback drawing a tqdm bar on stderr (for CLIs)."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int, message: str = "") -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
            _open_bars.add(bar)
        if bar.total != total:
            bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def close_bars() -> None:
    """Close the bars a failed step left open, so an error message is the last line on stderr
    (an open bar is otherwise drawn once more when the interpreter exits, below the error)."""
    for bar in list(_open_bars):
        bar.close()
    _open_bars.clear()
