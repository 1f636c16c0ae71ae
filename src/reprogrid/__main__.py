import sys

from reprogrid.cli import main

sys.exit(main())
