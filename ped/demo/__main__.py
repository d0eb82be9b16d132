import sys

from ped.demo.flow import main

sys.exit(main())
