"""``python -m medfilip``: the pipeline's CLI (medfilip.pipeline.cli), as the ``medfilip`` command."""

import sys

from medfilip.pipeline.cli import main

sys.exit(main())
