import sys

from mfdepth.cli import main

sys.exit(main())
