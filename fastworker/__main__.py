"""``python -m fastworker``: the same as the ``fastworker`` command."""

from .cli import main

main()
