import sys

from radiogen.cli import main

sys.exit(main())
