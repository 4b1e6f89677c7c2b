import sys

from layernas.cli import main

sys.exit(main())
