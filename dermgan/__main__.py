"""`python -m dermgan run --profile smoke`: see dermgan.pipeline."""

import sys

from dermgan.pipeline import main

sys.exit(main())
