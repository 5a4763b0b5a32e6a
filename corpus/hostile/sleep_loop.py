# threat: sleep in small steps forever
# expect: timeout
# local: yes
import time
while True:
    time.sleep(0.05)
