# threat: start worker processes with multiprocessing
# expect: contained
# local: no
try:
    import multiprocessing
    with multiprocessing.Pool(2) as pool:
        result = pool.map(abs, [-1, -2])
    print("LEAK: multiprocessing worked", result)
except Exception as exc:
    print("blocked:", type(exc).__name__)
