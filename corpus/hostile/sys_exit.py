# threat: call sys.exit() to stop the host
# expect: error:SystemExit
# local: yes
import sys
print("exiting")
sys.exit(3)
