# threat: start a thread that keeps burning CPU after the cell has ended
# expect: contained
# local: no
# note: the local executor cannot stop threads started by user code
try:
    import threading
    def burn():
        while True:
            pass
    threading.Thread(target=burn, daemon=True).start()
    print("thread started")
except Exception as exc:
    print("blocked:", type(exc).__name__)
