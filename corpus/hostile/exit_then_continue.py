# threat: exit in one cell, then check the session still runs the next one
# expect: contained
# local: yes
import sys
try:
    sys.exit(0)
except SystemExit:
    print("caught own exit")
# %%
try:
    raise KeyboardInterrupt
except KeyboardInterrupt:
    print("caught own interrupt")
print("session still alive")
