"""python -m demo: build the synthetic demo corpus (see demo/build.py)."""

import sys

from demo.build import main

if __name__ == "__main__":
    sys.exit(main())
