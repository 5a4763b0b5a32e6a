# threat: spawn many short-lived threads at once
# expect: contained
# local: yes
import time
results = []
try:
    import threading
    def work(i):
        time.sleep(0.02)
        results.append(i)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("threads finished:", len(results))
except Exception as exc:
    print("blocked:", type(exc).__name__)
