# threat: catch the first timeout interruption and keep looping
# expect: timeout
# local: yes
try:
    while True:
        pass
except BaseException as exc:
    print("caught", type(exc).__name__)
n = 0
while True:
    n += 1
