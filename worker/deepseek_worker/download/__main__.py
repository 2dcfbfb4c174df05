"""`python -m deepseek_worker.download` == `deepseek-worker-download`."""

import sys

from .job import main

sys.exit(main())
