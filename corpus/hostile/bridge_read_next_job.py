# threat: read the control channel to take the next job (and impersonate the driver from then on)
# expect: error:SystemError
# local: no
import os
data = os.read(0, 8)
print("LEAK: read the channel:", data)
