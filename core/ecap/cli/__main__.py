"""``python -m ecap.cli`` is ``ecap``."""

from . import main

main()
