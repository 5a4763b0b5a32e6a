# threat: set sys.stdout and sys.stderr to None to silence every session
# expect: contained
# local: yes
# note: the local executor reinstalls its output routers after every cell (while the cell runs, other sessions' output may be lost: see corpus/README.md)
import sys
sys.stdout = None
sys.stderr = None
