"""Allow `python -m marinelife` (and `torchrun -m marinelife`)."""

from marinelife.cli import main

raise SystemExit(main())
