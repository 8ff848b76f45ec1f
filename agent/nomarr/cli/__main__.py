"""``python -m nomarr.cli``: the same as the ``nomarr`` console script."""

from nomarr.cli import main

raise SystemExit(main())
