# name: generators, yield from, send and return values
def countdown(n):
    while n > 0:
        yield n
        n -= 1
    return "liftoff"
def wrapper():
    result = yield from countdown(3)
    yield result
print(list(wrapper()))
def flatten(items):
    for item in items:
        if isinstance(item, (list, tuple)):
            yield from flatten(item)
        else:
            yield item
print(list(flatten([1, [2, [3, (4, 5)], 6], [[7]]])))
def running_average():
    total = count = 0
    average = None
    while True:
        value = yield average
        total += value
        count += 1
        average = total / count
avg = running_average()
next(avg)
print([avg.send(v) for v in [10, 20, 30, 40]])
gen = countdown(2)
print(next(gen), next(gen))
try:
    next(gen)
except StopIteration as stop:
    print("stopped with", stop.value)
squares = (n * n for n in range(5))
print(sum(squares), sum(squares))
def fib():
    a, b = 0, 1
    while True:
        yield a
        a, b = b, a + b
from itertools import islice
print(list(islice(fib(), 15)))
