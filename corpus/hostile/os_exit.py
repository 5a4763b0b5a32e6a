# threat: end the process with os._exit(0), skipping all cleanup
# expect: error:SystemExit
# local: no
# note: a sandbox should turn the exit of its guest into a cell error; in-process it ends the host
import os
os._exit(0)
