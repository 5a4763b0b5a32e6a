# threat: set sys.stdout and sys.stderr to None to silence every session
# expect: contained
# local: no
# note: local executor bug: sys is shared and not restored, so output capture stops for all sessions of the process
import sys
sys.stdout = None
sys.stderr = None
