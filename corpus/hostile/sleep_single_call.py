# threat: one very long blocking C call (time.sleep) that bytecode-level interruption cannot reach
# expect: timeout
# local: no
import time
time.sleep(10**6)
