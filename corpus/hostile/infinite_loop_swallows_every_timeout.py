# threat: swallow every interruption in a loop so the cell never ends
# expect: timeout
# local: no
# note: the local executor re-raises its timeout every 200 ms, but a loop that catches BaseException forever never ends in-process
while True:
    try:
        while True:
            pass
    except BaseException:
        pass
