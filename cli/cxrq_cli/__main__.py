"""`python -m cxrq_cli`: the same as the `cxrq` console script."""

import sys

from cxrq_cli.main import main

sys.exit(main())
