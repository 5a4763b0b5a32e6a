# threat: schedule SIGALRM, whose default action terminates the host process
# expect: contained
# local: no
try:
    import signal
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    import time
    time.sleep(0.2)
    print("still alive")
except Exception as exc:
    print("blocked:", type(exc).__name__)
