import sys

from pedtools.demo.flow import main

sys.exit(main())
