# threat: pure-Python infinite loop to hold the executor forever
# expect: timeout
# local: yes
while True:
    pass
