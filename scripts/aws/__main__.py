"""``python -m scripts.aws`` is the ``ahi-spleen`` console script."""

from scripts.aws.cli import main

raise SystemExit(main())
